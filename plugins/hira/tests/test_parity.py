"""HiRA against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each case perturbs a fresh adapter in one library, saves it, loads it in the other and
compares outputs, the saved keys and shapes, and ``merge_and_unload`` (weights and outputs).
Linear, GPT-2 Conv1D, Conv1d/Conv2d and Embedding layers are all covered.
"""

from __future__ import annotations

import pytest

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_gpt2, tiny_llama
from peft_core.conformance.parity import checked_round_trip_both_ways, image_inputs, max_diff, model_output
from peft_core.conformance.parity import perturb_trainable, token_inputs
from peft_core_hira import HiraConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5


CASES = {
    "llama": (tiny_llama, token_inputs, {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "llama_defaults": (tiny_llama, token_inputs, {"r": 4}),
    "gpt2_conv1d": (tiny_gpt2, token_inputs, {"r": 2, "target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True}),
    "mlp_embedding_conv1d": (mlp, token_inputs, {"r": 2, "target_modules": ["emb", "lin0", "conv1d"]}),
    "convnet_conv2d": (convnet, image_inputs, {"r": 3, "target_modules": ["conv0", "conv1", "head"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hira_parity(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    diffs = checked_round_trip_both_ways(peft, build, make_inputs(), HiraConfig(**kwargs), peft.HiraConfig(**kwargs),
                                         tmp_path, atol=ATOL)
    print(f"HIRA parity {case}: {diffs}")


def test_two_merged_adapters_modulate_the_original_weight_as_in_peft(tmp_path):
    """PEFT merges W₀ ⊙ (1 + ΣBᵢAᵢ); merging one after the other here must give the same weights."""
    theirs = peft.get_peft_model(tiny_llama(), peft.HiraConfig(r=2, target_modules=["v_proj"]), adapter_name="a")
    theirs.add_adapter("b", peft.HiraConfig(r=3, target_modules=["v_proj", "o_proj"]))
    perturb_trainable(theirs, seed=5, scale=0.3, only="hira_")
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a", adapter_name="a")
    ours.load_adapter(tmp_path / "b", adapter_name="b")
    inputs = token_inputs()
    theirs.base_model.set_adapter(["a", "b"])
    ours.base_model.set_adapter(["a", "b"])
    both = model_output(theirs, inputs)
    assert max_diff(model_output(ours, inputs), both) <= ATOL
    ours_merged = ours.merge_and_unload(adapter_names=["a", "b"])
    theirs_merged = theirs.merge_and_unload(adapter_names=["a", "b"])
    theirs_state = theirs_merged.state_dict()
    for key, value in ours_merged.state_dict().items():
        assert max_diff(value, theirs_state[key]) <= ATOL, key
    assert max_diff(model_output(ours_merged, inputs), both) <= ATOL


def test_rank_pattern_applies_as_in_peft_only_to_layers_that_already_hold_an_adapter(tmp_path):
    """peft==0.21.2 builds new HiRA layers with ``r`` and uses ``rank_pattern`` for a second adapter."""
    first = {"r": 4, "target_modules": ["v_proj"]}
    second = {"r": 4, "target_modules": ["v_proj", "q_proj"], "rank_pattern": {"v_proj": 2, "q_proj": 3}}
    theirs = peft.get_peft_model(tiny_llama(), peft.HiraConfig(**first))
    theirs.add_adapter("second", peft.HiraConfig(**second))
    ours = get_peft_model(tiny_llama(), HiraConfig(**first))
    ours.add_adapter("second", HiraConfig(**second))
    for model in (ours, theirs):
        attn = model.base_model.model.model.layers[0].self_attn
        assert tuple(attn.v_proj.hira_A["second"].shape) == (2, 32)  # an existing layer: the pattern
        assert tuple(attn.q_proj.hira_A["second"].shape) == (4, 32)  # a new layer: r
