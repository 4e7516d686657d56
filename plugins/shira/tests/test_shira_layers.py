"""What makes SHiRA SHiRA: only a fixed sparse set of weight entries moves, LoRA's count of them."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from peft_core import get_peft_model
from peft_core.errors import ConfigError, PeftCoreError
from peft_core_shira import ShiraConfig, random_mask
from peft_core_shira.conformance import strided_mask

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 4))


def _trained_once(config):
    model = get_peft_model(_model(), config)
    before = model.base_model.model[0].base_layer.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 20)).pow(2).sum().backward()
    opt.step()
    return model, before


def test_training_moves_only_the_masked_entries_and_exactly_r_times_in_plus_out_of_them():
    model, before = _trained_once(ShiraConfig(r=2, target_modules=["0"]))
    model.merge_adapter()
    changed = model.base_model.model[0].base_layer.weight != before
    assert changed.sum() <= 2 * (20 + 12)
    layer = model.base_model.model[0]
    rows, cols = layer.shira_indices["default"].long()
    mask = torch.zeros(12, 20, dtype=torch.bool)
    mask[rows, cols] = True
    assert mask.sum() == 2 * (20 + 12)
    assert not changed[~mask].any()


def test_the_update_is_high_rank():
    model = get_peft_model(_model(), ShiraConfig(r=1, target_modules=["0"], init_weights=False))
    delta = model.base_model.model[0].get_delta_weight("default")
    assert torch.linalg.matrix_rank(delta) > 1


def test_random_mask_is_seeded_and_leaves_the_global_rng_alone():
    layer = nn.Linear(20, 12)
    state = torch.get_rng_state()
    a, b = random_mask(layer, 2, random_seed=1), random_mask(layer, 2, random_seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, random_mask(layer, 2, random_seed=2))
    assert a.sum() == 2 * 32 and a.dtype == torch.bool


def test_custom_mask_function_decides_the_entries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = ShiraConfig(r=1, mask_type="strided", target_modules=["0"])
    config.mask_fn = strided_mask
    model = get_peft_model(_model(), config)
    rows, cols = model.base_model.model[0].shira_indices["default"].long()
    expected = strided_mask(nn.Linear(20, 12), 1).nonzero().T
    assert torch.equal(torch.stack([rows, cols]), expected)


@pytest.mark.parametrize("bad_mask", [
    lambda layer, r, **kw: torch.ones(12, 20),  # too many entries
    lambda layer, r, **kw: torch.full((12, 20), 0.5),  # not 0/1
])
def test_a_bad_custom_mask_is_refused(bad_mask):
    config = ShiraConfig(r=1, mask_type="x", target_modules=["0"])
    config.mask_fn = bad_mask
    with pytest.raises(ConfigError, match="mask"):
        get_peft_model(_model(), config)


def test_without_a_mask_function_the_adapter_waits_for_saved_indices(tmp_path):
    config = ShiraConfig(r=1, mask_type="custom", target_modules=["0"])  # no mask_fn assigned
    model = get_peft_model(_model(), config)
    with pytest.raises(ConfigError, match="no mask"):
        model(torch.randn(2, 20))


def test_too_large_a_rank_is_refused_naming_the_module():
    with pytest.raises(PeftCoreError, match="lower r"):
        get_peft_model(_model(), ShiraConfig(r=9, target_modules=["0"]))  # 9·32 > 240


def test_gpt2_conv1d_is_refused():
    from peft_core.conformance.models import tiny_gpt2

    with pytest.raises(PeftCoreError, match="nn.Linear layers only"):
        get_peft_model(tiny_gpt2(), ShiraConfig(r=1, target_modules=["c_attn"]))
