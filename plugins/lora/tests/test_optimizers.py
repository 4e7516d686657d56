"""LoRA+ and LoRA-FA against Hugging Face PEFT (peft==0.21.2): the same parameter groups, the same steps."""

from __future__ import annotations

import pytest
import torch

from peft_core import LoraConfig, create_lorafa_optimizer, create_loraplus_optimizer, get_peft_model
from peft_core.conformance.models import tiny_gpt2, tiny_llama, token_batch
from peft_core.errors import PeftCoreError

peft = pytest.importorskip("peft")
from peft.optimizers import create_lorafa_optimizer as peft_lorafa  # noqa: E402
from peft.optimizers import create_loraplus_optimizer as peft_loraplus  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


def _groups(model, optimizer):
    # PEFT keeps a DoRA magnitude in a module (``...lora_magnitude_vector.default.weight``), here it is a parameter
    names = {id(p): n.replace("lora_magnitude_vector.default.weight", "lora_magnitude_vector.default")
             for n, p in model.named_parameters()}
    return [(sorted(names[id(p)] for p in g["params"]), g["lr"], g["weight_decay"]) for g in optimizer.param_groups]


@pytest.mark.parametrize("case", ["llama-embedding-bias", "gpt2-layernorm-dora"])
def test_loraplus_parameter_groups_equal_peft(case):
    if case == "llama-embedding-bias":  # a LoRA embedding, trained base biases (B side, no decay)
        def build():
            return tiny_llama(attention_bias=True)

        kwargs = {"target_modules": ["q_proj", "embed_tokens"], "bias": "lora_only"}
        filled = [0, 1, 2, 3]
    else:  # GPT-2: biases everywhere, a LayerNorm trained fully (modules_to_save), DoRA magnitudes (1-D)
        build, kwargs = tiny_gpt2, {"target_modules": ["c_attn"], "modules_to_save": ["ln_f"], "use_dora": True,
                                    "fan_in_fan_out": True}
        filled = [0, 2, 3]
    ours = get_peft_model(build(), LoraConfig(**kwargs))
    theirs = peft.get_peft_model(build(), peft.LoraConfig(**kwargs))
    settings = {"lr": 1e-3, "loraplus_lr_ratio": 16.0, "loraplus_lr_embedding": 1e-5, "loraplus_weight_decay": 0.1}
    ours_groups = _groups(ours, create_loraplus_optimizer(ours, torch.optim.AdamW, **settings))
    theirs_groups = _groups(theirs, peft_loraplus(theirs, torch.optim.AdamW, **settings))
    assert ours_groups == theirs_groups
    assert [i for i, (names, _, _) in enumerate(ours_groups) if names] == filled
    with pytest.raises(PeftCoreError, match="loraplus_lr_ratio"):
        create_loraplus_optimizer(ours, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=0)


def _train(model, make_optimizer, steps=4):
    optimizer = make_optimizer(model)
    ids = token_batch(batch=2, length=6)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("peft_bf16", [False, True], ids=["peft-fp32-projection", "peft-default"])
def test_lorafa_steps_equal_peft(peft_bf16, monkeypatch):
    import peft.optimizers.lorafa as peft_lorafa_module

    # PEFT projects B's gradient under bfloat16 autocast whenever bf16 is available (this CPU included);
    # here it stays in B's dtype. With PEFT's projection in fp32 too the steps must agree to rounding.
    monkeypatch.setattr(peft_lorafa_module, "is_bf16_available", lambda: peft_bf16)
    kwargs = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
              "rank_pattern": {"down_proj": 2}}
    torch.manual_seed(0)
    ours = get_peft_model(tiny_llama(), LoraConfig(**kwargs))
    torch.manual_seed(0)
    theirs = peft.get_peft_model(tiny_llama(), peft.LoraConfig(**kwargs))
    with torch.no_grad():  # B off zero, so A's projection matters from the first step
        for model in (ours, theirs):
            gen = torch.Generator().manual_seed(3)
            for name, param in sorted(model.named_parameters()):
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    start = {n: p.detach().clone() for n, p in ours.named_parameters() if "lora_" in n}
    ours_after = _train(ours, lambda m: create_lorafa_optimizer(m, r=4, lora_alpha=8, lr=1e-2, weight_decay=0.01))
    theirs_after = _train(theirs, lambda m: peft_lorafa(m, r=4, lora_alpha=8, lr=1e-2, weight_decay=0.01))
    assert set(ours_after) == set(theirs_after)
    for name, value in ours_after.items():
        if "lora_A" in name:
            assert torch.equal(value, start[name]), name  # A is frozen
        else:
            assert (value - start[name]).abs().max() > 1e-3, name  # B moved
            assert (value - theirs_after[name]).abs().max() <= (1e-3 if peft_bf16 else 1e-6), name
    print(f"LoRA-FA (PEFT bf16 projection: {peft_bf16}) max abs diff to PEFT after 4 steps:", max((ours_after[n] - theirs_after[n]).abs().max().item()
                                                            for n in ours_after))
