"""OFT against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each adapter is moved away from the identity before saving, so equal outputs mean equal
rotations. One known, deliberate difference: PEFT's unmerged Conv2d forward for kernels
larger than 1×1 folds overlapping patches back by summing them (its output is not even the
base output at init), so for such convolutions only merged weights are compared; 1×1
convolutions are compared end to end.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_gpt2, tiny_llama
from peft_core.conformance.parity import checked_round_trip_both_ways, image_inputs, max_diff, model_output
from peft_core.conformance.parity import perturb_trainable
from peft_core.conformance.parity import saved_shapes, token_inputs
from peft_core.errors import ConfigError
from peft_core.layer import AdapterLayer
from peft_core_oft import OFTConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
LLAMA = ["q_proj", "v_proj", "down_proj"]


CASES = {
    "block_size": (tiny_llama, token_inputs, {"target_modules": LLAMA, "oft_block_size": 8}),
    "adjusted_block_size": (tiny_llama, token_inputs, {"target_modules": LLAMA, "oft_block_size": 5}),
    "adjusted_r_exact_cayley": (tiny_llama, token_inputs, {"target_modules": ["k_proj", "o_proj"], "r": 3,
                                                           "oft_block_size": 0, "use_cayley_neumann": False}),
    "block_share": (tiny_llama, token_inputs, {"target_modules": LLAMA, "oft_block_size": 4, "block_share": True}),
    "coft_neumann_terms": (tiny_llama, token_inputs, {"target_modules": LLAMA, "oft_block_size": 8, "coft": True,
                                                      "eps": 0.5, "num_cayley_neumann_terms": 7}),
    "mlp_modules_to_save": (mlp, token_inputs, {"target_modules": ["lin0"], "oft_block_size": 4,
                                                "modules_to_save": ["lin1"]}),
    "convnet_1x1": (convnet, image_inputs, {"target_modules": ["conv1", "head"], "oft_block_size": 4}),
    "layers_to_transform": (tiny_llama, token_inputs, {"target_modules": LLAMA, "oft_block_size": 16,
                                                       "layers_to_transform": [1], "layers_pattern": "layers"}),
}


def _merged_state(model) -> dict[str, torch.Tensor]:
    return model.merge_and_unload().state_dict()


@pytest.mark.parametrize("case", list(CASES))
def test_oft_parity(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    checked_round_trip_both_ways(peft, build, make_inputs(), OFTConfig(**kwargs), peft.OFTConfig(**kwargs), tmp_path,
                                 atol=ATOL)
    assert any(k.endswith("oft_R.weight") for k in saved_shapes(tmp_path / "ours"))


def test_conv2d_3x3_merged_weights_match_peft(tmp_path):
    kwargs = {"target_modules": ["conv0", "conv1"], "r": 3, "oft_block_size": 0}
    inputs = image_inputs()
    theirs = peft.get_peft_model(convnet(), peft.OFTConfig(**kwargs))
    perturb_trainable(theirs, seed=3)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours = PeftModel.from_pretrained(convnet(), tmp_path / "theirs")
    assert ours.base_model.model.conv0.oft_R["default"].weight.shape == (3, 36)  # 27 patch features, blocks of 9
    unmerged = model_output(ours, inputs)
    ours_state, theirs_state = _merged_state(ours), _merged_state(theirs)
    for key in theirs_state:
        assert max_diff(ours_state[key], theirs_state[key]) <= ATOL, key
    # our unmerged forward is exactly the merged model (PEFT's is not, for kernels > 1×1)
    merged = convnet()
    merged.load_state_dict(ours_state)
    assert max_diff(model_output(merged, inputs), unmerged) <= ATOL


def test_unmerge_restores_peft_merged_weights(tmp_path):
    ours = get_peft_model(tiny_llama(), OFTConfig(target_modules=LLAMA, oft_block_size=8))
    perturb_trainable(ours, seed=4)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours.merge_adapter()
    assert any(max_diff(ours.state_dict()[k], before[k]) > 1e-3 for k in before if "base_layer.weight" in k)
    ours.unmerge_adapter()
    for key, value in ours.state_dict().items():
        assert max_diff(value, before[key]) <= 1e-5, key


def test_pre_0_14_config_is_refused(tmp_path):
    (tmp_path / "old").mkdir()
    old = {"peft_type": "OFT", "r": 8, "target_modules": ["q_proj"], "module_dropout": 0.0, "coft": False,
           "eps": 6e-5, "block_share": False, "init_weights": True}
    (tmp_path / "old" / "adapter_config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="0.14"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path / "old")
    with pytest.raises(ValueError, match="0.14"):  # PEFT refuses it too
        peft.OFTConfig.check_kwargs(**old)


def test_old_cayley_neumann_warns(tmp_path):
    OFTConfig(target_modules=["q_proj"]).save_pretrained(tmp_path / "cfg")
    data = json.loads((tmp_path / "cfg" / "adapter_config.json").read_text())
    data["peft_version"] = "0.17.1"
    (tmp_path / "cfg" / "adapter_config.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="0.18"):
        OFTConfig.from_pretrained(tmp_path / "cfg")
    data["peft_version"] = "0.21.2"
    (tmp_path / "cfg" / "adapter_config.json").write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OFTConfig.from_pretrained(tmp_path / "cfg").oft_block_size == 32


def test_config_json_is_byte_identical(tmp_path):
    kwargs = {"target_modules": ["q_proj"], "oft_block_size": 0, "r": 4, "coft": True, "task_type": "CAUSAL_LM"}
    OFTConfig(**kwargs).save_pretrained(tmp_path / "ours")
    peft.OFTConfig(**kwargs).save_pretrained(str(tmp_path / "theirs"))
    assert (tmp_path / "ours" / "adapter_config.json").read_text() == \
        (tmp_path / "theirs" / "adapter_config.json").read_text()


def test_requested_block_size_is_kept_in_config(tmp_path):
    model = get_peft_model(tiny_llama(), OFTConfig(target_modules=["q_proj"], oft_block_size=5))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, AdapterLayer) and layer.oft_block_size["default"] == 4 and layer.r["default"] == 8
    assert model.peft_config["default"].oft_block_size == 5


def test_gpt2_conv1d_beyond_peft():
    """PEFT's OFT refuses transformers' Conv1D; here it is a linear layer like any other."""
    kwargs = {"target_modules": ["c_attn", "c_fc"], "oft_block_size": 8, "fan_in_fan_out": True}
    with pytest.raises(TypeError, match="Conv1D"):
        peft.get_peft_model(tiny_gpt2(), peft.OFTConfig(**kwargs))
    inputs = token_inputs()
    ours = get_peft_model(tiny_gpt2(), OFTConfig(**kwargs))
    perturb_trainable(ours, seed=5)
    out = model_output(ours, inputs)
    assert max_diff(out, model_output(tiny_gpt2(), inputs)) > 1e-3
    assert max_diff(model_output(ours.merge_and_unload(), inputs), out) <= ATOL


def test_oft_model_name_like_peft():
    import peft_core

    model = peft_core.OFTModel(tiny_llama(), OFTConfig(target_modules=["q_proj"]), "default")
    assert type(model.model.model.layers[0].self_attn.q_proj).__name__.startswith("OFT")
