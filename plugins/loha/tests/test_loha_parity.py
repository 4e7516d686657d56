"""LoHa against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each case perturbs a fresh adapter in each library, saves it, loads it in the other and
compares outputs, saved shapes, the config JSON and ``merge_and_unload`` weights. PEFT's
LoHa does not adapt transformers' ``Conv1D``; ours does (last test).
"""

from __future__ import annotations

import pytest

from peft_core import get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_gpt2, tiny_llama
from peft_core.conformance.parity import checked_round_trip_both_ways, image_inputs, max_diff, model_output
from peft_core.conformance.parity import check_seeded_init_matches, perturb_trainable, saved_shapes, token_inputs
from peft_core_loha import LoHaConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
LLAMA = ["q_proj", "v_proj", "down_proj"]


CASES = {
    "llama": (tiny_llama, token_inputs, {"target_modules": LLAMA, "r": 4, "alpha": 8}),
    "llama_patterns": (tiny_llama, token_inputs, {"target_modules": LLAMA, "r": 4, "alpha": 6,
                                                  "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"down_proj": 3}}),
    "llama_layers_exclude": (tiny_llama, token_inputs, {"target_modules": ["q_proj", "v_proj", "o_proj"], "r": 3,
                                                        "layers_to_transform": [1], "layers_pattern": "layers",
                                                        "exclude_modules": ["o_proj"]}),
    "llama_random_init": (tiny_llama, token_inputs, {"target_modules": r".*\.(k_proj|up_proj)", "r": 2,
                                                     "init_weights": False}),
    "mlp_conv1d_flat_save": (mlp, token_inputs, {"target_modules": ["lin0", "conv1d"], "r": 3,
                                                 "modules_to_save": ["lin1"]}),
    "mlp_conv1d_effective": (mlp, token_inputs, {"target_modules": ["conv1d"], "r": 3, "use_effective_conv2d": True}),
    "convnet_flat": (convnet, image_inputs, {"target_modules": ["conv0", "conv1", "head"], "r": 2}),
    "convnet_effective": (convnet, image_inputs, {"target_modules": ["conv0", "conv1", "head"], "r": 2,
                                                  "use_effective_conv2d": True, "rank_dropout": 0.2,
                                                  "module_dropout": 0.3}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loha_parity(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    checked_round_trip_both_ways(peft, build, make_inputs(), LoHaConfig(**kwargs), peft.LoHaConfig(**kwargs),
                                 tmp_path, atol=ATOL)


def test_effective_conv2d_shapes_match_peft(tmp_path):
    """Tucker cores only on kernels larger than 1×1; the 1×1 conv and the Linear stay flat."""
    model = get_peft_model(convnet(), LoHaConfig(target_modules=["conv0", "conv1", "head"], r=2,
                                                  use_effective_conv2d=True))
    model.save_pretrained(tmp_path)
    shapes = {k.removeprefix("base_model.model."): v for k, v in saved_shapes(tmp_path).items()}
    assert shapes["conv0.hada_t1"] == (2, 2, 3, 3) and shapes["conv0.hada_w1_a"] == (2, 8)
    assert shapes["conv0.hada_w2_b"] == (2, 3)
    assert "conv1.hada_t1" not in shapes and shapes["conv1.hada_w1_a"] == (8, 2)
    assert shapes["head.hada_w1_b"] == (2, 8)


def test_seeded_init_draws_like_peft():
    """Same seed, same fresh adapter: the factors are drawn in PEFT's order and way."""
    kwargs = {"target_modules": ["conv0", "head"], "r": 3, "use_effective_conv2d": True, "init_weights": False}
    check_seeded_init_matches(peft, convnet, LoHaConfig(**kwargs), peft.LoHaConfig(**kwargs), "hada_")


def test_gpt2_conv1d_beyond_peft():
    """PEFT's LoHa refuses transformers' Conv1D; here it is a linear layer like any other."""
    kwargs = {"target_modules": ["c_attn", "c_fc"], "r": 4}
    with pytest.raises((TypeError, ValueError)):
        peft.get_peft_model(tiny_gpt2(), peft.LoHaConfig(**kwargs))
    inputs = token_inputs()
    ours = get_peft_model(tiny_gpt2(), LoHaConfig(**kwargs))
    perturb_trainable(ours, seed=5, scale=0.3)
    out = model_output(ours, inputs)
    assert max_diff(out, model_output(tiny_gpt2(), inputs)) > 1e-3
    assert max_diff(model_output(ours.merge_and_unload(), inputs), out) <= ATOL
