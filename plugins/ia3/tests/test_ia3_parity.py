"""IA³ against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each case builds an adapter with random (non-identity) vectors in one library, saves it and
loads it in the other: outputs agree to 1e-5, ``merge_and_unload`` gives the same weights,
the files hold the same keys and shapes and a config PEFT reads back equal. Several active
adapters and ``add_weighted_adapter`` are compared too.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_gpt2, tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output, perturb_trainable, saved_shapes
from peft_core.layer import AdapterLayer
from peft_core.wrappers import ModulesToSaveWrapper
from peft_core_ia3 import IA3Config

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5


def _tokens():
    return {"input_ids": token_batch()}


def _images():
    gen = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(2, 3, 8, 8, generator=gen), "labels": torch.tensor([1, 7])}


class GroupedConv(nn.Module):
    """Conv2d with groups=2 (input scaling must respect the groups when merged) and Conv3d."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv0 = nn.Conv2d(4, 6, kernel_size=3, padding=1, groups=2)
        self.conv1 = nn.Conv3d(6, 4, kernel_size=1)
        self.head = nn.Linear(4, 3)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv0(pixel_values)).unsqueeze(2)
        h = self.conv1(h).mean(dim=(2, 3, 4))
        return self.head(h)


def _grouped_inputs():
    return {"pixel_values": torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))}


LLAMA = {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
CASES = {
    "llama": (tiny_llama, _tokens, LLAMA),
    "llama_defaults": (tiny_llama, _tokens, {}),  # target and feed-forward modules from the model type
    "llama_regex": (tiny_llama, _tokens, {"target_modules": r".*\.(q_proj|up_proj|o_proj)",
                                          "feedforward_modules": r".*\.up_proj"}),
    "gpt2_conv1d": (tiny_gpt2, _tokens, {"target_modules": ["c_attn", "mlp.c_proj"],
                                         "feedforward_modules": ["mlp.c_proj"], "fan_in_fan_out": True}),
    # fan_in_fan_out left at its default: both libraries must notice the Conv1D layout themselves
    "gpt2_defaults": (tiny_gpt2, _tokens, {}),
    "mlp": (mlp, _tokens, {"target_modules": ["lin0", "lin1"], "feedforward_modules": ["lin1"]}),
    "mlp_modules_to_save": (mlp, _tokens, {"target_modules": ["lin0"], "feedforward_modules": [],
                                           "modules_to_save": ["lin1"]}),
    "convnet_conv2d": (convnet, _images, {"target_modules": ["conv0", "conv1", "head"],
                                          "feedforward_modules": ["conv1"]}),
    "grouped_conv_conv3d": (GroupedConv, _grouped_inputs, {"target_modules": ["conv0", "conv1", "head"],
                                                           "feedforward_modules": ["conv0", "head"]}),
}


def _perturb(model, seed: int) -> None:
    """Move every trainable tensor (IA³ vectors, saved modules) away from its init."""
    perturb_trainable(model, seed, scale=0.2)


@pytest.mark.parametrize("case", list(CASES))
def test_ia3_parity(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    inputs = make_inputs()
    base_out = model_output(build(), inputs)

    # ours -> PEFT
    ours = get_peft_model(build(), IA3Config(**kwargs))
    _perturb(ours, seed=11)
    ours.eval()
    ours_out = model_output(ours, inputs)
    assert max_diff(ours_out, base_out) > 1e-3, "the adapter must change the output for the test to mean anything"
    ours.save_pretrained(tmp_path / "ours")
    theirs_from_ours = peft.PeftModel.from_pretrained(build(), tmp_path / "ours")
    assert max_diff(model_output(theirs_from_ours, inputs), ours_out) <= ATOL

    # PEFT -> ours
    theirs = peft.get_peft_model(build(), peft.IA3Config(**kwargs))
    _perturb(theirs, seed=22)
    theirs.eval()
    theirs_out = model_output(theirs, inputs)
    theirs.save_pretrained(tmp_path / "theirs")
    ours_from_theirs = PeftModel.from_pretrained(build(), tmp_path / "theirs")
    assert max_diff(model_output(ours_from_theirs, inputs), theirs_out) <= ATOL

    # the same files: keys, shapes, and a config PEFT reads back equal
    assert saved_shapes(tmp_path / "ours") == saved_shapes(tmp_path / "theirs")
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")
    read_back = peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))
    assert type(read_back) is peft.IA3Config

    # merging: the same merged weights and outputs (PEFT scales the bias of output-scaled layers too)
    ours_merged = ours_from_theirs.merge_and_unload()
    theirs_merged = theirs.merge_and_unload()
    assert not any(isinstance(m, (AdapterLayer, ModulesToSaveWrapper)) for m in ours_merged.modules())
    ours_state, theirs_state = ours_merged.state_dict(), theirs_merged.state_dict()
    assert set(ours_state) == set(theirs_state)
    for key in theirs_state:
        assert max_diff(ours_state[key], theirs_state[key]) <= ATOL, key
    assert max_diff(model_output(ours_merged, inputs), theirs_out) <= ATOL


def _two_adapters(tmp_path):
    """PEFT saves adapters ``a`` (output scaling of k/v, input scaling of down_proj) and ``b`` (v, down_proj)."""
    theirs = peft.get_peft_model(tiny_llama(), peft.IA3Config(**LLAMA), adapter_name="a")
    theirs.add_adapter("b", peft.IA3Config(target_modules=["v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    perturb_trainable(theirs, seed=3, scale=0.2, only="ia3_l")
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a", adapter_name="a")
    ours.load_adapter(tmp_path / "b", adapter_name="b")
    return theirs, ours


def test_several_active_adapters_multiply_as_in_peft(tmp_path):
    theirs, ours = _two_adapters(tmp_path)
    inputs = _tokens()
    theirs.base_model.set_adapter(["a", "b"])
    ours.base_model.set_adapter(["a", "b"])
    both = model_output(ours, inputs)
    assert max_diff(both, model_output(theirs, inputs)) <= ATOL
    ours.base_model.set_adapter("a")
    assert max_diff(both, model_output(ours, inputs)) > 1e-3
    # merging both active adapters gives the same output
    ours.base_model.set_adapter(["a", "b"])
    ours.merge_adapter()
    assert max_diff(model_output(ours, inputs), both) <= ATOL


@pytest.mark.parametrize("weights", [[0.7, 0.3], [1.5, -0.4]])
def test_add_weighted_adapter_linear_matches_peft(tmp_path, weights):
    theirs, ours = _two_adapters(tmp_path)
    inputs = _tokens()
    theirs.add_weighted_adapter(["a", "b"], weights, "mix")
    ours.add_weighted_adapter(["a", "b"], weights, "mix", combination_type="linear")
    ours.add_weighted_adapter(["a", "b"], weights, "mix_default")  # PEFT-style call: no combination_type
    theirs.set_adapter("mix")
    expected = model_output(theirs, inputs)
    for name in ("mix", "mix_default"):
        ours.set_adapter(name)
        assert max_diff(model_output(ours, inputs), expected) <= ATOL
    assert ours.peft_config["mix"].to_dict()["feedforward_modules"] == ["down_proj"]
    ours_l = {k: v for k, v in ours.state_dict().items() if k.endswith(".ia3_l.mix")}
    theirs_l = {k: v for k, v in theirs.state_dict().items() if k.endswith(".ia3_l.mix")}
    assert set(ours_l) == set(theirs_l) and ours_l
    for key in theirs_l:
        assert max_diff(ours_l[key], theirs_l[key]) <= ATOL, key


def test_config_json_matches_peft(tmp_path):
    """The same fields and values (PEFT writes sets in iteration order, we sort them: compared sorted)."""
    kwargs = {"target_modules": ["q_proj", "down_proj"], "feedforward_modules": ["down_proj"],
              "task_type": "CAUSAL_LM", "modules_to_save": ["lm_head"]}
    IA3Config(**kwargs).save_pretrained(tmp_path / "ours")
    peft.IA3Config(**kwargs).save_pretrained(str(tmp_path / "theirs"))
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")


def test_layers_to_transform_extra_is_ignored_by_peft_with_the_same_outputs(tmp_path):
    """PEFT's IA3Config has no layers_to_transform: it drops the field, injects everywhere, and the
    vectors it finds no saved value for stay ones — so the outputs still agree."""
    ours = get_peft_model(tiny_llama(), IA3Config(target_modules=["v_proj", "down_proj"],
                                                  feedforward_modules=["down_proj"], layers_to_transform=[1]))
    perturb_trainable(ours, seed=1, scale=0.3)
    ours.eval()
    ours.save_pretrained(tmp_path)
    assert all(".layers.1." in key for key in saved_shapes(tmp_path))
    theirs = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path)
    inputs = _tokens()
    out = model_output(ours, inputs)
    assert max_diff(out, model_output(tiny_llama(), inputs)) > 1e-3
    assert max_diff(model_output(theirs, inputs), out) <= ATOL
