"""SHiRA against Hugging Face PEFT (peft==0.21.2): the same masks, files and numbers, both ways.

Random masks (unseeded and seeded) must be the very entries PEFT picks; a custom mask must
travel through the saved ``shira_indices`` alone (the loading side has no mask function).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_bert, tiny_llama, token_batch
from peft_core.conformance.parity import config_json, round_trip_both_ways
from peft_core_shira import ShiraConfig
from peft_core_shira.conformance import strided_mask

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5


def _tokens():
    return {"input_ids": token_batch()}


CASES = {
    "llama_random": (tiny_llama, {"r": 2, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "llama_seeded": (tiny_llama, {"r": 3, "random_seed": 42, "target_modules": ["k_proj", "o_proj", "up_proj"]}),
    "llama_defaults": (tiny_llama, {"r": 1}),
    "llama_custom_mask": (tiny_llama, {"r": 2, "mask_type": "strided", "target_modules": ["q_proj", "v_proj"]}),
    # the SEQ_CLS wrapper trains and saves the classifier head itself
    "bert_seq_cls": (tiny_bert, {"r": 2, "target_modules": ["query", "value"], "task_type": "SEQ_CLS"}),
    "mlp_custom_modules_to_save": (mlp, {"r": 1, "mask_type": "strided", "target_modules": ["lin0"],
                                         "modules_to_save": ["lin1"]}),
}


def _configs(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours, theirs = ShiraConfig(**kwargs), peft.ShiraConfig(**kwargs)
    if kwargs.get("mask_type", "random") != "random":
        ours.mask_fn = theirs.mask_fn = strided_mask
    return ours, theirs


@pytest.mark.parametrize("case", list(CASES))
def test_shira_parity(case, tmp_path):
    build, kwargs = CASES[case]
    ours, theirs = _configs(kwargs)
    diffs = round_trip_both_ways(peft, build, _tokens(), ours, theirs, tmp_path)
    print(f"SHIRA parity {case}: {diffs}")
    assert diffs["moved"] > 1e-3, "the adapter must change the output for the comparison to mean anything"
    for key in ("ours_to_peft", "peft_to_ours", "merged_weights", "merged_output"):
        assert diffs[key] <= ATOL, (key, diffs)
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")
    saved = load_file(str(tmp_path / "ours" / "adapter_model.safetensors"))
    indices = {k: v for k, v in saved.items() if k.endswith("shira_indices")}
    assert indices and all(v.dtype == torch.int32 for v in indices.values())
    if "custom" not in case:  # the same random draw as PEFT's: identical index files
        theirs_saved = load_file(str(tmp_path / "theirs" / "adapter_model.safetensors"))
        for key, value in indices.items():
            assert torch.equal(value, theirs_saved[key]), key


def test_random_masks_are_the_entries_peft_picks():
    for seed in (None, 0, 7):
        ours = get_peft_model(tiny_llama(), ShiraConfig(r=2, random_seed=seed, target_modules=["q_proj", "k_proj"]))
        theirs = peft.get_peft_model(tiny_llama(), peft.ShiraConfig(r=2, random_seed=seed, target_modules=["q_proj", "k_proj"]))
        for (name, module), (_, other) in zip(ours.base_model.model.named_modules(), theirs.base_model.model.named_modules()):
            if hasattr(module, "shira_indices") and module.shira_indices:
                assert torch.equal(module.shira_indices["default"], other.shira_indices["default"]), (seed, name)
