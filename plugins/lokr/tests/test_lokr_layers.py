"""LoKr layer behaviour: factor shapes from the factorisation, rank dropout with and without rescaling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peft_core import get_peft_model
from peft_core.conformance.parity import perturb_trainable
from peft_core.errors import ConfigError
from peft_core.lycoris import factorization
from peft_core_lokr import LoKrConfig, LoKrLayer


def _layer(in_features=48, out_features=20, **kwargs):
    base = nn.Sequential(nn.Linear(in_features, out_features))
    model = get_peft_model(base, LoKrConfig(target_modules=["0"], **kwargs))
    layer = model.base_model.model[0]
    assert isinstance(layer, LoKrLayer)
    return model, layer


def _stored(layer):
    return {attr: tuple(getattr(layer, attr)["default"].shape)
            for attr in layer.adapter_layer_names if "default" in getattr(layer, attr)}


@pytest.mark.parametrize(("kwargs", "expected"), [
    # out 20 = 4·5, in 48 = 6·8; r=8 ≥ max(5, 8)/2: both factors whole
    ({"r": 8}, {"lokr_w1": (4, 6), "lokr_w2": (5, 8)}),
    # r=3 < 8/2: w2 becomes a rank-3 pair; w1 stays whole without decompose_both
    ({"r": 3}, {"lokr_w1": (4, 6), "lokr_w2_a": (5, 3), "lokr_w2_b": (3, 8)}),
    # decompose_both with r=1 < max(4, 6)/2: w1 is a pair too
    ({"r": 1, "decompose_both": True}, {"lokr_w1_a": (4, 1), "lokr_w1_b": (1, 6), "lokr_w2_a": (5, 1),
                                        "lokr_w2_b": (1, 8)}),
    # decompose_factor=2 divides both sizes: w1 is (2, 2), w2 (10, 24); r=4 < 24/2 decomposes w2
    ({"r": 4, "decompose_factor": 2}, {"lokr_w1": (2, 2), "lokr_w2_a": (10, 4), "lokr_w2_b": (4, 24)}),
])
def test_factor_shapes_follow_the_factorisation(kwargs, expected):
    _, layer = _layer(**kwargs)
    assert _stored(layer) == expected
    assert factorization(20, kwargs.get("decompose_factor", -1))[0] == next(iter(expected.values()))[0]


@torch.no_grad()
def test_delta_is_the_scaled_kronecker_product():
    model, layer = _layer(r=8, alpha=4)
    perturb_trainable(model, seed=0)
    expected = torch.kron(layer.lokr_w1["default"], layer.lokr_w2["default"]) * (4 / 8)
    assert torch.allclose(layer.get_delta_weight("default"), expected)


@pytest.mark.parametrize("init", [True, "lycoris"])
def test_both_inits_start_at_zero_delta(init):
    _, layer = _layer(r=1, decompose_both=True, init_weights=init)
    assert torch.equal(layer.get_delta_weight("default"), torch.zeros(20, 48))
    _, random = _layer(r=1, init_weights=False)
    assert random.get_delta_weight("default").abs().max() > 0


@pytest.mark.parametrize("rescale", [False, True])
@torch.no_grad()
def test_rank_dropout_in_training_only_and_scaled_on_request(rescale):
    model, layer = _layer(r=8, rank_dropout=0.5, rank_dropout_scale=rescale)
    perturb_trainable(model, seed=1, scale=0.3)
    x = torch.randn(3, 48, generator=torch.Generator().manual_seed(2))
    base = layer.base_layer(x)
    full = x @ layer.get_delta_weight("default").T
    layer.eval()
    assert torch.allclose(layer(x), base + full, atol=1e-6)
    layer.train()
    torch.manual_seed(4)
    seen = False
    for _ in range(10):
        added = layer(x) - base
        kept = added.abs().amax(dim=0) > 1e-7
        if kept.any() and not kept.all():
            seen = True
            factor = kept.numel() / kept.sum() if rescale else 1.0
            assert torch.allclose(added[:, kept], full[:, kept] * factor, atol=1e-5)
    assert seen


def test_refusals_are_clear():
    with pytest.raises(ConfigError, match="init_weights"):
        LoKrConfig(init_weights="gaussian")
    with pytest.raises(ConfigError, match="decompose_factor"):
        LoKrConfig(decompose_factor=0)
    with pytest.raises(ConfigError, match="decompose_both"):
        LoKrConfig(decompose_both="yes")
