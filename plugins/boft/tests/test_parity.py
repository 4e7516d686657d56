"""BOFT against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

PEFT computes BOFT in pure PyTorch only with one butterfly factor (without its CUDA
extension it silently uses one, whatever the config says); here any number of factors
runs in pure PyTorch. Parity is therefore checked end to end with one factor, PEFT's
single-factor checkpoints of multi-factor configs load here unchanged in meaning, and the
butterfly permutations are compared with PEFT's own for several factors.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_llama
from peft_core.conformance.parity import checked_round_trip_both_ways, image_inputs, max_diff, model_output
from peft_core.conformance.parity import perturb_trainable
from peft_core.conformance.parity import saved_shapes, token_inputs
from peft_core.errors import ConfigError
from peft_core_boft import BOFTConfig
from peft_core_boft.layer import butterfly_permutation

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
LLAMA = ["q_proj", "v_proj", "down_proj"]


CASES = {
    "block_size": (tiny_llama, token_inputs, {"target_modules": LLAMA, "boft_block_size": 4}),
    "block_num": (tiny_llama, token_inputs, {"target_modules": ["k_proj", "o_proj", "up_proj"], "boft_block_size": 0,
                                             "boft_block_num": 4}),
    "mlp_modules_to_save": (mlp, token_inputs, {"target_modules": ["lin0"], "boft_block_size": 8,
                                                "modules_to_save": ["lin1"]}),
    "convnet_conv2d": (convnet, image_inputs, {"target_modules": ["conv0", "conv1", "head"], "boft_block_size": 0,
                                               "boft_block_num": 1}),
    "layers_to_transform": (tiny_llama, token_inputs, {"target_modules": LLAMA, "boft_block_size": 8,
                                                       "layers_to_transform": [1], "layers_pattern": "layers"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_boft_parity(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    checked_round_trip_both_ways(peft, build, make_inputs(), BOFTConfig(**kwargs), peft.BOFTConfig(**kwargs), tmp_path,
                                 atol=ATOL)
    assert any(k.endswith("boft_R") for k in saved_shapes(tmp_path / "ours"))


def test_multi_factor_checkpoint_from_peft_without_cuda_loads(tmp_path):
    kwargs = {"target_modules": LLAMA, "boft_block_size": 4, "boft_n_butterfly_factor": 2}
    inputs = token_inputs()
    theirs = peft.get_peft_model(tiny_llama(), peft.BOFTConfig(**kwargs))
    perturb_trainable(theirs, seed=7)
    theirs.eval()
    theirs.save_pretrained(str(tmp_path / "theirs"))
    assert {v[0] for k, v in saved_shapes(tmp_path / "theirs").items() if k.endswith("boft_R")} == {1}
    ours = PeftModel.from_pretrained(tiny_llama(), tmp_path / "theirs")
    layer = ours.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.boft_R["default"].shape == (2, 8, 4, 4)
    assert max_diff(model_output(ours, inputs), model_output(theirs, inputs)) <= ATOL


@pytest.mark.parametrize("n,block_num,block_size,factors", [(32, 8, 4, 2), (32, 4, 8, 3), (64, 16, 4, 4), (24, 6, 4, 2)])
def test_butterfly_permutations_match_peft(n, block_num, block_size, factors):
    layer = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(n, n)),
                                peft.BOFTConfig(target_modules=["0"], boft_block_size=block_size)).base_model.model[0]
    for i in range(factors):
        expected = layer.block_butterfly_perm(n, int(block_num / 2 ** i), int(block_size / 2), factors - 1)
        assert torch.equal(butterfly_permutation(n, block_num // 2 ** i, block_size // 2, factors - 1), expected)


def test_multi_factor_butterfly_is_orthogonal_and_mixes_blocks():
    model = get_peft_model(tiny_llama(), BOFTConfig(target_modules=["q_proj"], boft_block_size=4,
                                                    boft_n_butterfly_factor=3, init_weights=False))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    B = layer.butterfly("default")
    assert torch.allclose(B @ B.T, torch.eye(32), atol=1e-5)
    # three factors couple each feature with 4·2² = 16 others: B has 16×16 dense blocks, not 4×4
    assert (B[:16, :16].abs() > 1e-8).float().mean() > 0.9 and B[:16, 16:].abs().max() < 1e-8


def test_indivisible_block_size_is_refused_like_peft():
    with pytest.raises(ConfigError, match="not divisible"):
        get_peft_model(tiny_llama(), BOFTConfig(target_modules=["q_proj"], boft_block_size=5))
    with pytest.raises(ValueError, match="divisible"):
        peft.get_peft_model(tiny_llama(), peft.BOFTConfig(target_modules=["q_proj"], boft_block_size=5))


def test_config_json_is_byte_identical(tmp_path):
    kwargs = {"target_modules": ["q_proj"], "boft_block_size": 0, "boft_block_num": 8,
              "boft_n_butterfly_factor": 2, "boft_dropout": 0.1, "task_type": "CAUSAL_LM"}
    BOFTConfig(**kwargs).save_pretrained(tmp_path / "ours")
    peft.BOFTConfig(**kwargs).save_pretrained(str(tmp_path / "theirs"))
    assert (tmp_path / "ours" / "adapter_config.json").read_text() == \
        (tmp_path / "theirs" / "adapter_config.json").read_text()


def test_boft_model_name_like_peft():
    import peft_core

    model = peft_core.BOFTModel(tiny_llama(), BOFTConfig(target_modules=["q_proj"]), "default")
    assert type(model.model.model.layers[0].self_attn.q_proj).__name__.startswith("BOFT")
