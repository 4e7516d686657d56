"""Adaptive subspace allocation: the schedule, the global top-k, and the three ways to drive it.

``model.base_model.update_and_allocate(step)`` in a custom loop, :class:`AdamssAsaCallback` in a
``transformers.Trainer``, and the same callback in peft-core's ``AdapterTrainer``.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import tiny_llama
from peft_core_adamss import AdamssConfig, AdamssLayer
from peft_core_adamss.allocation import scheduled_budget

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ASA = {"target_modules": ["q_proj", "v_proj"], "r": 8, "num_subspaces": 3, "subspace_rank": 2, "use_asa": True,
       "asa_target_subspaces": 4, "init_warmup": 2, "final_warmup": 6, "mask_interval": 2, "task_type": "CAUSAL_LM"}


def _trainable_subspaces(model) -> int:
    count = 0
    for module in model.modules():
        if isinstance(module, AdamssLayer):
            count += sum(bool(a.requires_grad and b.requires_grad)
                         for a, b in zip(module.adamss_A["default"], module.adamss_B["default"]))
    return count


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 97, (4, 12), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids}


def test_schedule_goes_from_all_subspaces_to_the_target():
    config = AdamssConfig(target_modules=["x"], use_asa=True, asa_target_subspaces=5, init_warmup=10,
                          final_warmup=110, asa_schedule_exponent=3.0)
    assert scheduled_budget(9, config, total=40) is None
    assert scheduled_budget(10, config, total=40) == 40
    assert scheduled_budget(60, config, total=40) == int(5 + 35 * 0.5 ** 3)
    assert scheduled_budget(110, config, total=40) == 5
    assert scheduled_budget(500, config, total=40) == 5


def test_custom_loop_keeps_the_scheduled_number_of_most_important_subspaces():
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(initializer_range=0.15), AdamssConfig(**ASA))
    total = _trainable_subspaces(model)
    assert total == 12  # 4 layers × 3 subspaces
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frozen_before: dict[int, torch.Tensor] = {}
    for step in range(8):
        model(**_batch(step)).loss.backward()
        optimizer.step()
        model.base_model.update_and_allocate(step)
        if step == 6:  # the last masking step of the ramp: exactly the target remains trainable
            assert _trainable_subspaces(model) == 4
            frozen_before = {id(p): p.detach().clone() for p in model.parameters()
                             if not p.requires_grad and "adamss_" in _name(model, p)}
        elif step == 4:
            assert _trainable_subspaces(model) == scheduled_budget(4, model.peft_config["default"], total)
        optimizer.zero_grad()
    # frozen subspaces keep their values (they still act, they no longer train)
    assert frozen_before
    for p in model.parameters():
        if id(p) in frozen_before:
            assert torch.equal(p, frozen_before[id(p)])


def _name(model, param) -> str:
    return next(n for n, p in model.named_parameters() if p is param)


def test_adapters_without_asa_are_left_alone():
    model = get_peft_model(tiny_llama(), AdamssConfig(**{**ASA, "use_asa": False}))
    model(**_batch()).loss.backward()
    for step in range(8):
        model.base_model.update_and_allocate(step)
    assert _trainable_subspaces(model) == 12


@pytest.mark.parametrize("trainer_kind", ["transformers", "adapter_trainer"])
def test_callback_drives_allocation_in_a_trainer(tmp_path, trainer_kind):
    import datasets
    from transformers import Trainer, TrainingArguments

    from peft_core.training import AdapterTrainer
    from peft_core_adamss import AdamssAsaCallback

    rows = [_batch(i)["input_ids"][0].tolist() for i in range(16)]
    data = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(initializer_range=0.15), AdamssConfig(**ASA))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
                             use_cpu=True, max_steps=8, save_strategy="no", disable_tqdm=True,
                             dataloader_num_workers=0, remove_unused_columns=False)
    cls = Trainer if trainer_kind == "transformers" else AdapterTrainer
    trainer = cls(model=model, args=args, train_dataset=data, callbacks=[AdamssAsaCallback()])
    trainer.train()
    assert _trainable_subspaces(model) == 4


def test_peft_core_training_loop_drives_allocation_through_on_backward():
    """peft-core's own loop (``peft_core.training.train``) takes the plain method as its ``on_backward`` hook."""
    from peft_core.training import TrainSettings, train
    from peft_core.training.data import TokenData

    gen = torch.Generator().manual_seed(0)
    data = TokenData(train=torch.randint(1, 97, (400,), generator=gen), eval=torch.randint(1, 97, (60,), generator=gen),
                     seq_len=12)
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(initializer_range=0.15), AdamssConfig(**ASA))
    settings = TrainSettings(steps=8, batch_size=4, warmup_steps=0, eval_every=0)
    train(model, data, settings, progress=False, on_backward=lambda step, m: m.base_model.update_and_allocate(step))
    assert _trainable_subspaces(model) == 4
