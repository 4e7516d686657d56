"""EVA against Hugging Face PEFT (peft==0.21.2) on a tiny Llama, with the same calibration batches.

Both libraries fix the sign of each component (its largest entry positive) and seed the
randomised SVD, so ``lora_A`` is compared as is, not up to sign. Ranks after redistribution,
the config fields EVA rewrites, the saved files (both ways) and outputs must agree.

One deliberate difference: with ``whiten=True`` PEFT divides the PCA's components *in place*
once per layer, so layers fed the same input (q/k/v projections share one PCA) are whitened
two or three times over. We whiten each layer once; whitened parity is checked on the layers
with an input of their own.
"""

from __future__ import annotations

import pytest
import torch

import peft_core
from peft_core import LoraConfig, PeftModel, get_peft_model
from peft_core.conformance.models import tiny_llama
from peft_core.conformance.parity import config_json, max_diff, model_output, perturb_trainable, saved_shapes

peft = pytest.importorskip("peft")

torch.set_num_threads(1)  # tiny matrices: threads only fight over the shared CPUs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
SHARED_INPUT = ("q_proj", "k_proj", "v_proj")


def calibration_batches(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(0, 97, (4, 16), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, 12:] = 0  # padding is left out
        labels = ids.clone()
        labels[:, :3] = -100  # so are prompt positions (use_label_mask)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _pair(eva_kwargs, **lora_kwargs):
    batches = calibration_batches()
    kwargs = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "init_lora_weights": "eva", **lora_kwargs}
    torch.manual_seed(1)
    theirs = peft.get_peft_model(tiny_llama(), peft.LoraConfig(**kwargs, eva_config=peft.EvaConfig(**eva_kwargs)))
    peft.initialize_lora_eva_weights(theirs, batches, show_progress_bar=False)
    torch.manual_seed(1)
    ours = get_peft_model(tiny_llama(), LoraConfig(**kwargs, eva_config=peft_core.EvaConfig(**eva_kwargs)))
    peft_core.initialize_lora_eva_weights(ours, batches, show_progress_bar=False)
    return ours, theirs


def _factors(model, which):
    return {k: v for k, v in model.state_dict().items() if which in k}


@pytest.mark.parametrize("eva_kwargs,lora_kwargs", [
    ({}, {}),
    ({"rho": 3.0, "whiten": True, "adjust_scaling_factors": False}, {"use_rslora": True}),
    ({"rho": 1.0, "use_label_mask": False, "tau": 0.9}, {"rank_pattern": {"down_proj": 2}}),
])
def test_lora_a_ranks_and_outputs_equal_peft(eva_kwargs, lora_kwargs, tmp_path):
    ours, theirs = _pair(eva_kwargs, **lora_kwargs)
    ours_cfg, theirs_cfg = ours.peft_config["default"], theirs.peft_config["default"]
    assert ours_cfg.rank_pattern == theirs_cfg.rank_pattern
    assert ours_cfg.alpha_pattern == pytest.approx(theirs_cfg.alpha_pattern)
    assert sorted(ours_cfg.target_modules) == sorted(theirs_cfg.target_modules)
    ours_a, theirs_a = _factors(ours, "lora_A"), _factors(theirs, "lora_A")
    assert sorted(ours_a) == sorted(theirs_a)
    compared = [k for k in theirs_a if not (eva_kwargs.get("whiten") and any(p in k for p in SHARED_INPUT))]
    assert max(max_diff(ours_a[k], theirs_a[k]) for k in compared) < 1e-6
    if eva_kwargs.get("whiten"):
        return  # outputs would differ by PEFT's repeated whitening of q/k/v (see the module docstring)
    # the same B in both (B is zero after EVA), so outputs compare the whole adapted model
    perturb_trainable(ours, seed=3, only="lora_B")
    perturb_trainable(theirs, seed=3, only="lora_B")
    batch = calibration_batches(1, seed=9)[0]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    base = model_output(tiny_llama(), inputs)
    assert max_diff(model_output(ours, inputs), base) > 1e-3  # the adapters really move the output
    assert max_diff(model_output(ours, inputs), model_output(theirs, inputs)) < 1e-5
    # saved files: same keys and shapes; each library loads the other's with the same outputs
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    assert saved_shapes(tmp_path / "ours") == saved_shapes(tmp_path / "theirs")
    assert config_json(tmp_path / "ours")["rank_pattern"] == config_json(tmp_path / "theirs")["rank_pattern"]
    assert config_json(tmp_path / "ours")["eva_config"] == config_json(tmp_path / "theirs")["eva_config"]
    loaded_theirs = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path / "ours")
    loaded_ours = PeftModel.from_pretrained(tiny_llama(), tmp_path / "theirs")
    assert max_diff(model_output(loaded_theirs, inputs), model_output(ours, inputs)) < 1e-5
    assert max_diff(model_output(loaded_ours, inputs), model_output(theirs, inputs)) < 1e-5


def test_state_dict_of_a_plain_model_equals_peft():
    batches = calibration_batches()
    config_kwargs = {"r": 4, "target_modules": TARGETS, "init_lora_weights": "eva"}
    theirs = peft.get_eva_state_dict(tiny_llama(), batches, peft.LoraConfig(**config_kwargs), show_progress_bar=False)
    ours = peft_core.get_eva_state_dict(tiny_llama(), batches, LoraConfig(**config_kwargs), show_progress_bar=False)
    assert sorted(ours) == sorted(theirs)
    assert {k: v.shape[0] for k, v in ours.items()} == {k: v.shape[0] for k, v in theirs.items()}
    assert max(max_diff(ours[k], theirs[k]) for k in theirs if theirs[k].numel()) < 1e-6
