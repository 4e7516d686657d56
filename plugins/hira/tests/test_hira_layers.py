"""What makes HiRA HiRA: the update is the frozen weight modulated entry-wise by a low-rank matrix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peft_core import get_peft_model
from peft_core.errors import ConfigError, TargetModulesError
from peft_core_hira import HiraConfig, HiraLinear

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(12, 10)
        self.grouped = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _adapted(r: int = 2, **kwargs) -> tuple[nn.Module, HiraLinear]:
    model = get_peft_model(Two(), HiraConfig(r=r, target_modules=["lin"], **kwargs))
    layer = model.base_model.model.lin
    with torch.no_grad():
        layer.hira_B["default"].normal_()
    return model, layer


def test_forward_is_base_plus_hadamard_modulated_weight():
    model, layer = _adapted()
    x = torch.randn(3, 12)
    w, b = layer.base_layer.weight, layer.base_layer.bias
    update = w * (layer.hira_B["default"] @ layer.hira_A["default"])
    expected = x @ (w + update).T + b
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_update_is_high_rank_although_factors_have_rank_r():
    _, layer = _adapted(r=1)
    update = layer.base_layer.weight * layer.get_delta_weight("default")
    assert torch.linalg.matrix_rank(layer.get_delta_weight("default")) == 1
    assert torch.linalg.matrix_rank(update) > 1


def test_zero_weight_entries_stay_zero():
    model, layer = _adapted()
    with torch.no_grad():
        layer.base_layer.weight[:, :4] = 0
    model.merge_adapter()
    assert torch.equal(layer.base_layer.weight[:, :4], torch.zeros(10, 4))


def test_default_init_is_identity_and_false_is_not():
    x = torch.randn(2, 12)
    base = Two()(x)
    fresh = get_peft_model(Two(), HiraConfig(r=2, target_modules=["lin"]))
    assert torch.equal(fresh(x), base)
    assert not torch.allclose(get_peft_model(Two(), HiraConfig(r=2, target_modules=["lin"], init_weights=False))(x), base)


def test_gaussian_init_draws_a_with_std_one_over_r():
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(400, 400)), HiraConfig(r=4, target_modules=["0"], init_weights="gaussian"))
    a = model.base_model.model[0].hira_A["default"]
    assert abs(a.std().item() - 0.25) < 0.01
    assert not model.base_model.model[0].hira_B["default"].any()


def test_merging_two_adapters_then_unmerging_restores_the_weight_exactly():
    model, layer = _adapted()
    model.add_adapter("other", HiraConfig(r=3, target_modules=["lin"], init_weights=False))
    original = layer.base_layer.weight.detach().clone()
    model.base_model.set_adapter(["default", "other"])
    x = torch.randn(2, 12)
    both = model(x)
    model.merge_adapter()
    w0 = original
    expected = w0 * (1 + layer.get_delta_weight("default") + layer.get_delta_weight("other"))
    assert torch.allclose(layer.base_layer.weight, expected, atol=1e-5)
    assert torch.allclose(model(x), both, atol=1e-5)
    model.unmerge_adapter()
    assert torch.equal(layer.base_layer.weight, original)


def test_grouped_convolution_is_refused_with_a_reason():
    with pytest.raises(TargetModulesError, match="grouped convolution"):
        get_peft_model(Two(), HiraConfig(target_modules=["grouped"]))


@pytest.mark.parametrize("bad", [{"r": 0}, {"init_weights": "pissa"}, {"hira_dropout": 1.0}, {"rank_pattern": {"lin": 0}}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ConfigError):
        HiraConfig(target_modules=["lin"], **bad)
