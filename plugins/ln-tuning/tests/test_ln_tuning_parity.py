"""LN tuning against Hugging Face PEFT (peft==0.21.2): the same files and numbers, both ways.

Each case trains (perturbs) the norm copies in one library, saves, loads in the other and
compares outputs; merging (a swap of modules) must give PEFT's merged model too.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import tiny_gpt2, tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output, perturb_trainable, saved_shapes
from peft_core_ln_tuning import LNTuningConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-6
CASES = {
    "llama-default": (tiny_llama, {}),
    "llama-exclude-head": (tiny_llama, {"target_modules": ["input_layernorm", "norm"],
                                        "exclude_modules": r"model\.layers\.1\..*", "modules_to_save": ["lm_head"]}),
    "gpt2": (tiny_gpt2, {"target_modules": ["ln_1", "ln_f"]}),  # LayerNorm with a bias
}


def _inputs():
    return {"input_ids": token_batch()}


def _build(library: str, case: str):
    build, kwargs = CASES[case]
    config = LNTuningConfig(**kwargs) if library == "ours" else peft.LNTuningConfig(**kwargs)
    model = (get_peft_model if library == "ours" else peft.get_peft_model)(build(), config)
    perturb_trainable(model, seed=1, scale=0.3)
    return model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_ours_loads_in_peft_with_identical_outputs_and_files(case, tmp_path):
    ours = _build("ours", case)
    out = model_output(ours, _inputs())
    assert max_diff(out, model_output(CASES[case][0](), _inputs())) > 1e-2
    ours.save_pretrained(tmp_path / "ours")
    theirs = peft.PeftModel.from_pretrained(CASES[case][0](), tmp_path / "ours")
    assert max_diff(model_output(theirs, _inputs()), out) <= ATOL
    _build("peft", case).save_pretrained(str(tmp_path / "theirs"))
    assert saved_shapes(tmp_path / "ours") == saved_shapes(tmp_path / "theirs")
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")


@pytest.mark.parametrize("case", sorted(CASES))
def test_peft_loads_here_with_identical_outputs_and_merges_alike(case, tmp_path):
    theirs = _build("peft", case)
    theirs.save_pretrained(str(tmp_path))
    ours = PeftModel.from_pretrained(CASES[case][0](), tmp_path)
    expected = model_output(theirs, _inputs())
    assert max_diff(model_output(ours, _inputs()), expected) <= ATOL
    ours.merge_adapter()
    theirs.merge_adapter()
    assert max_diff(model_output(ours, _inputs()), model_output(theirs, _inputs())) <= ATOL
    ours.unmerge_adapter()
    theirs.unmerge_adapter()
    merged_ours, merged_theirs = ours.merge_and_unload(), theirs.merge_and_unload()
    assert max_diff(model_output(merged_ours, _inputs()), expected) <= ATOL
    # PEFT's LN-tuning unload leaves modules_to_save wrapped (lm_head.modules_to_save.default.weight);
    # ours returns the plain model: compare under the plain names
    theirs_state = {k.replace(".modules_to_save.default.", "."): v for k, v in merged_theirs.state_dict().items()
                    if ".original_module." not in k}
    assert set(merged_ours.state_dict()) == set(theirs_state)
    for key, value in merged_ours.state_dict().items():
        assert max_diff(value, theirs_state[key]) <= ATOL, key
