"""CorDA against Hugging Face PEFT (peft==0.21.2) on a tiny Llama, with the same calibration batches.

PEFT's ``corda`` module imports ``attr`` only for its ``dataclass`` decorator; the test
environment has no ``attrs``, so the standard library's ``dataclass`` stands in for it.
"""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
import torch

import peft_core
from peft_core import LoraConfig, PeftModel, get_peft_model
from peft_core.conformance.models import tiny_llama
from peft_core.conformance.parity import max_diff, model_output, perturb_trainable, saved_shapes

peft = pytest.importorskip("peft")
sys.modules.setdefault("attr", types.SimpleNamespace(dataclass=dataclasses.dataclass))
peft_corda = pytest.importorskip("peft.tuners.lora.corda")

torch.set_num_threads(1)

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


def calibration(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 97, (1, 24), generator=gen) for _ in range(n)]


def _pair(method, tmp_path=None, **lora_kwargs):
    kwargs = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "init_lora_weights": "corda", **lora_kwargs}
    batches = calibration()
    theirs_base = tiny_llama()
    theirs_cfg = peft.LoraConfig(**kwargs, corda_config=peft.tuners.lora.config.CordaConfig(corda_method=method))
    peft_corda.preprocess_corda(theirs_base, theirs_cfg, run_model=lambda: [theirs_base(input_ids=x) for x in batches])
    theirs = peft.get_peft_model(theirs_base, theirs_cfg)
    ours_base = tiny_llama()
    files = {} if tmp_path is None else {"cache_file": str(tmp_path / "cache.pt"),
                                         "covariance_file": str(tmp_path / "cov.pt")}
    ours_cfg = LoraConfig(**kwargs, corda_config=peft_core.CordaConfig(corda_method=method, **files))
    peft_core.preprocess_corda(ours_base, ours_cfg, run_model=lambda: [ours_base(input_ids=x) for x in batches])
    return get_peft_model(ours_base, ours_cfg), theirs


@pytest.mark.parametrize("method,lora_kwargs", [("ipm", {}), ("kpm", {}),
                                                ("ipm", {"use_rslora": True, "rank_pattern": {"down_proj": 2}})])
def test_adapter_residual_base_and_outputs_equal_peft(method, lora_kwargs, tmp_path):
    ours, theirs = _pair(method, **lora_kwargs)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert sorted(ours_state) == sorted(theirs_state)
    adapter = [k for k in theirs_state if "lora_" in k]
    base = [k for k in theirs_state if "lora_" not in k]
    assert max(max_diff(ours_state[k], theirs_state[k]) for k in adapter) < 1e-6
    assert max(max_diff(ours_state[k], theirs_state[k]) for k in base) < 1e-6
    inputs = {"input_ids": calibration(2, seed=4)[1]}
    assert max_diff(model_output(ours, inputs), model_output(tiny_llama(), inputs)) < 1e-5  # residual + adapter = W
    perturb_trainable(ours, seed=3)
    perturb_trainable(theirs, seed=3)
    assert max_diff(model_output(ours, inputs), model_output(theirs, inputs)) < 1e-5
    # the adapter files (applied to each library's residual base) load in the other library
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    assert saved_shapes(tmp_path / "ours") == saved_shapes(tmp_path / "theirs")


def test_cache_files_are_interchangeable_with_peft(tmp_path):
    ours, theirs = _pair("kpm", tmp_path)
    assert (tmp_path / "cache.pt").exists() and (tmp_path / "cov.pt").exists()
    # PEFT builds its adapter from OUR cache file
    theirs_base = tiny_llama()
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="corda",
                          corda_config=peft.tuners.lora.config.CordaConfig(cache_file=str(tmp_path / "cache.pt")))
    peft_corda.preprocess_corda(theirs_base, cfg)
    from_cache = peft.get_peft_model(theirs_base, cfg).state_dict()
    ours_state = ours.state_dict()
    assert max(max_diff(ours_state[k], from_cache[k]) for k in from_cache) < 1e-6
