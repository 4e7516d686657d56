"""What makes GraLoRA GraLoRA: a k×k grid of independent low-rank blocks, LoRA's parameter count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peft_core import get_peft_model
from peft_core.errors import ConfigError, PeftCoreError
from peft_core_gralora import GraloraConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _adapted(**kwargs):
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(12, 8)), GraloraConfig(target_modules=["0"], init_weights=False, **kwargs))
    return model, model.base_model.model[0]


def test_each_block_is_its_own_low_rank_pair():
    """Zeroing one block's pair changes that block of the update and no other."""
    model, layer = _adapted(r=4, gralora_k=2, alpha=4)
    delta = layer.get_delta_weight("default").detach().clone()
    s = 2  # r / k
    with torch.no_grad():
        # block (output block j=1, input block n=0): rank slots j·s… of input block 0, rows n·s… of output block 1
        layer.gralora_A["default"][0, :, 1 * s:2 * s] = 0
    changed = (layer.get_delta_weight("default") - delta).abs() > 0
    assert changed[4:, :6].all()  # rows of output block 1, columns of input block 0
    assert not changed[:4].any() and not changed[:, 6:].any()
    for j in range(2):
        for n in range(2):
            block = delta[4 * j:4 * (j + 1), 6 * n:6 * (n + 1)]
            assert torch.linalg.matrix_rank(block) <= s


def test_update_reaches_rank_k_times_r_over_k_with_loras_parameter_count():
    _, layer = _adapted(r=4, gralora_k=2, alpha=4)
    params = sum(p.numel() for p in (layer.gralora_A["default"], layer.gralora_B["default"]))
    assert params == 4 * (12 + 8)  # LoRA at rank 4
    assert torch.linalg.matrix_rank(layer.get_delta_weight("default")) == 8  # 2 × 4 > 4


def test_forward_matches_the_delta_weight_and_scaling():
    model, layer = _adapted(r=4, gralora_k=2, hybrid_r=2, alpha=3)
    x = torch.randn(5, 12)
    base = layer.base_layer
    expected = base(x) + x @ layer.get_delta_weight("default").T
    assert torch.allclose(model(x), expected, atol=1e-5)
    assert layer.scaling["default"] == pytest.approx(3 / 6)


def test_hybrid_part_is_a_plain_lora_pair_over_the_whole_weight():
    _, layer = _adapted(r=2, gralora_k=2, hybrid_r=3, alpha=5)
    blocks_only = layer.get_delta_weight("default").detach().clone()
    with torch.no_grad():
        layer.gralora_B_general["default"].weight.zero_()
    hybrid = blocks_only - layer.get_delta_weight("default")
    a, b = layer.gralora_A_general["default"].weight, blocks_only
    assert torch.linalg.matrix_rank(hybrid) <= 3 and hybrid.abs().sum() > 0
    assert a.shape == (3, 12) and b.shape == (8, 12)


def test_sizes_not_divisible_by_k_are_refused_naming_the_module():
    with pytest.raises(PeftCoreError, match="divisible by k"):
        get_peft_model(nn.Sequential(nn.Linear(12, 9)), GraloraConfig(r=2, gralora_k=2, target_modules=["0"]))


@pytest.mark.parametrize("bad", [{"r": 3, "gralora_k": 2}, {"gralora_k": 0}, {"hybrid_r": -1}, {"bias": "x"},
                                 {"alpha": "big"}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ConfigError):
        GraloraConfig(target_modules=["0"], **bad)


def test_training_base_biases_is_refused_with_what_to_do():
    with pytest.raises(PeftCoreError, match="modules_to_save"):
        get_peft_model(nn.Sequential(nn.Linear(12, 8)), GraloraConfig(r=2, target_modules=["0"], bias="all"))
