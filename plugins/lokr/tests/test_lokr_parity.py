"""LoKr against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

The cases cover every way a factor is stored — whole or low-rank ``w1`` (``decompose_both``),
whole, flat low-rank or Tucker ``w2`` — on Linear, Conv1d and Conv2d targets, plus the
``decompose_factor`` split, the three inits and the rank/alpha patterns.
"""

from __future__ import annotations

import pytest

from peft_core import get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_gpt2, tiny_llama
from peft_core.conformance.parity import checked_round_trip_both_ways, image_inputs, max_diff, model_output
from peft_core.conformance.parity import check_seeded_init_matches, perturb_trainable, saved_shapes, token_inputs
from peft_core_lokr import LoKrConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
LLAMA = ["q_proj", "v_proj", "down_proj"]


CASES = {
    "llama_whole_factors": (tiny_llama, token_inputs, {"target_modules": LLAMA, "r": 8}),
    "llama_low_rank_w2": (tiny_llama, token_inputs, {"target_modules": LLAMA, "r": 1, "alpha": 4}),
    "llama_decompose_both_lycoris": (tiny_llama, token_inputs, {"target_modules": LLAMA, "r": 1,
                                                                "decompose_both": True, "decompose_factor": 16,
                                                                "init_weights": "lycoris"}),
    "llama_patterns_factor": (tiny_llama, token_inputs, {"target_modules": LLAMA, "r": 4, "decompose_factor": 4,
                                                         "rank_pattern": {"q_proj": 1},
                                                         "alpha_pattern": {"v_proj": 2.5},
                                                         "rank_dropout": 0.1, "rank_dropout_scale": True}),
    "llama_layers_random_init": (tiny_llama, token_inputs, {"target_modules": ["k_proj", "up_proj"], "r": 2,
                                                            "layers_to_transform": 0, "layers_pattern": "layers",
                                                            "init_weights": False}),
    "mlp_conv1d_whole_save": (mlp, token_inputs, {"target_modules": ["lin0", "conv1d"], "r": 8,
                                                  "modules_to_save": ["lin1"]}),
    "mlp_conv1d_flat": (mlp, token_inputs, {"target_modules": ["lin0", "conv1d"], "r": 1, "decompose_both": True}),
    "convnet_whole": (convnet, image_inputs, {"target_modules": ["conv0", "conv1", "head"], "r": 8}),
    "convnet_flat": (convnet, image_inputs, {"target_modules": ["conv0", "conv1", "head"], "r": 1}),
    "convnet_effective": (convnet, image_inputs, {"target_modules": ["conv0", "conv1", "head"], "r": 1,
                                                  "use_effective_conv2d": True, "decompose_both": True,
                                                  "decompose_factor": 2, "module_dropout": 0.3}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lokr_parity(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    checked_round_trip_both_ways(peft, build, make_inputs(), LoKrConfig(**kwargs), peft.LoKrConfig(**kwargs),
                                 tmp_path, atol=ATOL)


def test_stored_factors_follow_the_rank(tmp_path):
    """Which tensors exist, and their shapes, for each storage choice (PEFT's on-disk names)."""
    model = get_peft_model(convnet(), LoKrConfig(target_modules=["conv0", "conv1", "head"], r=1,
                                                 use_effective_conv2d=True, decompose_both=True))
    model.save_pretrained(tmp_path)
    shapes = {k.removeprefix("base_model.model."): v for k, v in saved_shapes(tmp_path).items()}
    # conv0: out 8 = 2·4, in 3 = 1·3; r=1 < 4/2 decomposes w2 into a Tucker core over the 3×3 kernel
    assert shapes["conv0.lokr_t2"] == (1, 1, 3, 3)
    assert shapes["conv0.lokr_w2_a"] == (1, 4) and shapes["conv0.lokr_w2_b"] == (1, 3)
    assert shapes["conv0.lokr_w1"] == (2, 1)  # r=1 is not below max(2, 1)/2: w1 stays whole
    # conv1 is 1×1: no Tucker core, the kernel is flattened into w2_b
    assert "conv1.lokr_t2" not in shapes and shapes["conv1.lokr_w2_b"] == (1, 4)
    assert shapes["head.lokr_w2_a"] == (5, 1) and shapes["head.lokr_w1"] == (2, 2)


def test_seeded_init_draws_like_peft():
    kwargs = {"target_modules": ["conv0", "head"], "r": 1, "decompose_both": True, "init_weights": "lycoris"}
    check_seeded_init_matches(peft, convnet, LoKrConfig(**kwargs), peft.LoKrConfig(**kwargs), "lokr_")


def test_conv1d_tucker_beyond_peft():
    """A Conv1d (k=3) with a Tucker-decomposed w2 fails inside PEFT's forward; here it runs and merges."""
    kwargs = {"target_modules": ["conv1d"], "r": 1, "use_effective_conv2d": True}
    inputs = token_inputs()
    theirs = peft.get_peft_model(mlp(), peft.LoKrConfig(**kwargs))
    with pytest.raises(RuntimeError):
        model_output(theirs, inputs)
    ours = get_peft_model(mlp(), LoKrConfig(**kwargs))
    assert ours.base_model.model.conv1d.lokr_t2["default"].shape == (1, 1, 3, 1)
    perturb_trainable(ours, seed=2, scale=0.3)
    out = model_output(ours, inputs)
    assert max_diff(out, model_output(mlp(), inputs)) > 1e-3
    assert max_diff(model_output(ours.merge_and_unload(), inputs), out) <= ATOL


def test_gpt2_conv1d_beyond_peft():
    """PEFT's LoKr refuses transformers' Conv1D; here it is a linear layer like any other."""
    kwargs = {"target_modules": ["c_attn", "c_fc"], "r": 2}
    with pytest.raises((TypeError, ValueError)):
        peft.get_peft_model(tiny_gpt2(), peft.LoKrConfig(**kwargs))
    inputs = token_inputs()
    ours = get_peft_model(tiny_gpt2(), LoKrConfig(**kwargs))
    perturb_trainable(ours, seed=5, scale=0.3)
    out = model_output(ours, inputs)
    assert max_diff(out, model_output(tiny_gpt2(), inputs)) > 1e-3
    assert max_diff(model_output(ours.merge_and_unload(), inputs), out) <= ATOL
