"""What makes MiSS MiSS: one shard shared by every column block, and the bat/mini variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peft_core import get_peft_model
from peft_core.errors import ConfigError, PeftCoreError
from peft_core_miss import MissConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _adapted(n_in: int = 10, n_out: int = 8, **kwargs):
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(n_in, n_out)), MissConfig(target_modules=["0"], **kwargs))
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.miss_block["default"].normal_(std=0.3)
    return model, layer


def test_balance_shard_is_shared_by_every_column_block_and_the_partial_last_one():
    _, layer = _adapted(r=4)  # in = 10: blocks of 4, 4 and a partial 2
    delta = layer.get_delta_weight("default")
    shard = layer.miss_block["default"].T  # (out, r)
    assert torch.equal(delta[:, 0:4], shard) and torch.equal(delta[:, 4:8], shard)
    assert torch.equal(delta[:, 8:10], shard[:, :2])


def test_balance_forward_equals_the_dense_update_without_building_it():
    model, layer = _adapted(r=3)
    x = torch.randn(4, 10)
    expected = layer.base_layer(x) + x @ layer.get_delta_weight("default").T
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_mini_repeats_its_shard_along_the_outputs():
    _, layer = _adapted(r=2, mini_r=2, init_weights="mini")
    assert tuple(layer.miss_block["default"].shape) == (2, 2)
    delta = layer.get_delta_weight("default")
    assert torch.equal(delta[0:2], delta[2:4]) and torch.equal(delta[0:2], delta[6:8])


def test_bat_updates_each_block_with_its_rows_shard_and_unmerges_exactly():
    model, layer = _adapted(n_in=8, n_out=4, r=2, init_weights="bat")
    w = layer.base_layer.weight.detach().clone()
    shards = layer.miss_block["default"].detach()
    assert tuple(shards.shape) == (2, 2, 2)
    model.merge_adapter()
    merged = layer.base_layer.weight.detach()
    for i in range(2):
        for j in range(4):
            block = w[2 * i:2 * i + 2, 2 * j:2 * j + 2]
            expected = block @ (torch.eye(2) + shards[i]) + shards[i]
            assert torch.allclose(merged[2 * i:2 * i + 2, 2 * j:2 * j + 2], expected, atol=1e-6)
    model.unmerge_adapter()
    assert torch.allclose(layer.base_layer.weight, w, atol=1e-5)


def test_bat_forward_is_the_adapted_weight_and_ignores_dropout():
    model, layer = _adapted(n_in=8, n_out=4, r=2, init_weights="bat", miss_dropout=0.5)
    model.train()
    x = torch.randn(3, 8)
    weight = layer.bat_weight(layer.base_layer.weight.detach(), "default")
    assert torch.allclose(model(x), x @ weight.T + layer.base_layer.bias, atol=1e-5)


def test_default_init_is_identity_and_false_is_random():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(10, 8))
    x = torch.randn(2, 10)
    for init, identity in ((True, True), ("bat", True), ("mini", True), (False, False)):
        r = 2
        model = get_peft_model(nn.Sequential(nn.Linear(10, 8)), MissConfig(r=r, init_weights=init, target_modules=["0"]))
        model.base_model.model[0].base_layer.load_state_dict(base[0].state_dict())
        assert torch.allclose(model(x), base(x)) == identity, init


@pytest.mark.parametrize("kwargs, match", [({"r": 11}, "larger than in_features"),
                                           ({"r": 3, "init_weights": "bat"}, "not divisible"),
                                           ({"r": 2, "mini_r": 3, "init_weights": "mini"}, "does not divide"),
                                           ({"r": 2, "bias": "all"}, "modules_to_save")])
def test_layers_that_do_not_fit_are_refused_with_a_reason(kwargs, match):
    with pytest.raises(PeftCoreError, match=match):
        get_peft_model(nn.Sequential(nn.Linear(10, 8)), MissConfig(target_modules=["0"], **kwargs))


@pytest.mark.parametrize("bad", [{"r": 0}, {"mini_r": -1}, {"init_weights": "lora"}, {"miss_dropout": 1.0}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ConfigError):
        MissConfig(target_modules=["0"], **bad)
