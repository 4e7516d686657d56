"""LoHa layer behaviour: dropout only in training, merging never drops, effective-conv shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peft_core import get_peft_model
from peft_core.conformance.models import mlp
from peft_core.conformance.parity import perturb_trainable
from peft_core.errors import ConfigError, TargetModulesError
from peft_core_loha import LoHaConfig, LoHaLayer


def _layer(**kwargs):
    model = get_peft_model(mlp(), LoHaConfig(target_modules=["lin0"], r=3, **kwargs))
    perturb_trainable(model, seed=0, scale=0.3)
    layer = model.base_model.model.lin0
    assert isinstance(layer, LoHaLayer)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = layer.base_layer(x)
        full = x @ layer.get_delta_weight("default").T  # the adapter's contribution without dropout
    return layer, x, base, full


@torch.no_grad()
def test_eval_mode_ignores_both_dropouts():
    layer, x, base, full = _layer(rank_dropout=0.5, module_dropout=0.5)
    layer.eval()
    outs = [layer(x) for _ in range(5)]
    for out in outs:
        assert torch.allclose(out, base + full, atol=1e-6)


@torch.no_grad()
def test_training_module_dropout_skips_the_whole_adapter_sometimes():
    layer, x, base, full = _layer(module_dropout=0.5)
    layer.train()
    torch.manual_seed(0)
    skipped = 0
    for _ in range(40):
        out = layer(x)
        if torch.equal(out, base):
            skipped += 1
        else:
            assert torch.allclose(out, base + full, atol=1e-6)
    assert 0 < skipped < 40


@torch.no_grad()
def test_training_rank_dropout_zeroes_output_rows_and_rescales_the_rest():
    layer, x, base, full = _layer(rank_dropout=0.5)
    layer.train()
    torch.manual_seed(3)
    seen_dropped = False
    for _ in range(10):
        added = layer(x) - base
        dropped = added.abs().amax(dim=0) < 1e-7  # a delta row of ΔW is an output column here
        kept = ~dropped
        assert kept.any() or dropped.all()
        if dropped.any() and kept.any():
            seen_dropped = True
            factor = added.shape[1] / kept.sum()  # LoHa always rescales by 1 / (kept fraction)
            assert torch.allclose(added[:, kept], full[:, kept] * factor, atol=1e-5)
    assert seen_dropped


@torch.no_grad()
def test_merging_in_training_mode_uses_the_whole_delta():
    layer, x, base, full = _layer(rank_dropout=0.9, module_dropout=0.9)
    weight = layer.base_layer.weight.clone()
    layer.train()
    layer.merge()
    assert torch.allclose(layer.base_layer.weight, weight + layer.get_delta_weight("default"), atol=1e-6)
    layer.eval()
    assert torch.allclose(layer(x), base + full, atol=1e-5)


def test_grouped_conv_delta_has_the_grouped_weight_shape():
    model = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2, padding=1))
    peft_model = get_peft_model(model, LoHaConfig(target_modules=["0"], r=2, use_effective_conv2d=True))
    layer = peft_model.base_model.model[0]
    assert layer.hada_t1["default"].shape == (2, 2, 3, 3) and layer.hada_w1_b["default"].shape == (2, 2)
    perturb_trainable(peft_model, seed=0)
    x = torch.randn(1, 4, 5, 5)
    out = peft_model(x)
    peft_model.merge_adapter()
    assert torch.allclose(peft_model(x), out, atol=1e-5)


def test_refusals_are_clear():
    with pytest.raises(ConfigError, match="init_weights"):
        LoHaConfig(init_weights="lycoris")
    with pytest.raises(ConfigError, match="rank_dropout"):
        LoHaConfig(rank_dropout=1.0)
    with pytest.raises(TargetModulesError, match="Conv1d and Conv2d"):
        get_peft_model(nn.Sequential(nn.Conv3d(2, 2, 1)), LoHaConfig(target_modules=["0"]))
    with pytest.raises(TargetModulesError):
        get_peft_model(mlp(), LoHaConfig(target_modules=["emb"]))
