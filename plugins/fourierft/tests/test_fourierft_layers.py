"""FourierFT's defining behaviour: seeded spectral positions and an update that is an inverse DFT."""

from __future__ import annotations

import math

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_llama, token_batch
from peft_core.errors import ConfigError
from peft_core_fourierft import FourierFTConfig, FourierFTLayer, spectral_positions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _layers(model) -> dict[str, FourierFTLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, FourierFTLayer)}


def test_positions_are_seeded_distinct_and_in_range():
    a = spectral_positions(12, 7, 30, seed=5)
    assert a.shape == (2, 30)
    assert torch.equal(a, spectral_positions(12, 7, 30, seed=5))
    assert not torch.equal(a, spectral_positions(12, 7, 30, seed=6))
    assert int(a[0].max()) < 12 and int(a[1].max()) < 7 and int(a.min()) >= 0
    assert len({(int(r), int(c)) for r, c in a.T}) == 30  # no frequency is chosen twice


def test_drawing_positions_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    spectral_positions(40, 40, 100, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_delta_is_the_scaled_real_inverse_dft_of_the_sparse_spectrum():
    """Checked against the DFT sum written out: ΔW[p,q] = s/(NM) Σ_k c_k cos(2π(p·u_k/N + q·v_k/M))."""
    model = get_peft_model(mlp(), FourierFTConfig(target_modules=["lin0"], n_frequency=9, scaling=3.0))
    layer = _layers(model)["base_model.model.lin0"]
    coeffs = layer.fourierft_spectrum["default"].detach().double()
    rows, cols = layer.indices["default"]
    n, m = 24, 16  # lin0: Linear(16 -> 24), so the spectrum is (out, in) = (24, 16)
    p = torch.arange(n, dtype=torch.float64)[:, None, None]
    q = torch.arange(m, dtype=torch.float64)[None, :, None]
    phase = 2 * math.pi * (p * rows.double() / n + q * cols.double() / m)
    expected = 3.0 / (n * m) * (coeffs * torch.cos(phase)).sum(-1)
    delta = layer.get_delta_weight("default")
    assert delta.shape == (24, 16)
    assert torch.allclose(delta.double(), expected, atol=1e-6)


def test_forward_adds_x_times_delta_transposed():
    model = get_peft_model(mlp(), FourierFTConfig(target_modules=["lin0"], n_frequency=20))
    layer = _layers(model)["base_model.model.lin0"]
    x = torch.randn(3, 16)
    with torch.no_grad():
        expected = layer.base_layer(x) + x @ layer.get_delta_weight("default").T
        assert torch.allclose(layer(x), expected, atol=1e-6)


@pytest.mark.parametrize("init_weights, identity", [(True, True), (False, False)])
def test_identity_only_with_init_weights_true(init_weights, identity):
    inputs = {"input_ids": token_batch()}
    with torch.no_grad():
        base = tiny_llama()(**inputs).logits
        model = get_peft_model(tiny_llama(), FourierFTConfig(target_modules=["v_proj"], n_frequency=50,
                                                             init_weights=init_weights))
        out = model(**inputs).logits
    assert torch.equal(out, base) is identity


def test_n_frequency_pattern_follows_peft_matching_rule():
    config = FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=10,
                             n_frequency_pattern={"v_proj": 3, "model.layers.0.self_attn.q_proj": 5, "lin.*": 7})
    sizes = {n.removeprefix("base_model.model."): m.fourierft_n_frequency["default"]
             for n, m in _layers(get_peft_model(tiny_llama(), config)).items()}
    assert sizes == {"model.layers.0.self_attn.q_proj": 5, "model.layers.0.self_attn.v_proj": 3,
                     "model.layers.1.self_attn.q_proj": 10, "model.layers.1.self_attn.v_proj": 3}
    # a key must follow a dot unless it is the full name: "lin.*" does not reach the top-level "lin0"
    assert config.n_frequency_for("lin0") == 10 and config.n_frequency_for("lin0.x") == 10
    assert config.n_frequency_for("block.lin0") == 7


def test_too_many_frequencies_for_a_layer_is_a_clear_error():
    with pytest.raises(ConfigError, match="exceeds its 24×16"):
        get_peft_model(mlp(), FourierFTConfig(target_modules=["lin0"], n_frequency=24 * 16 + 1))


def test_half_precision_base_computes_the_transform_in_float32():
    model = get_peft_model(mlp().to(torch.bfloat16), FourierFTConfig(target_modules=["lin0"], n_frequency=20),
                           autocast_adapter_dtype=False)
    layer = _layers(model)["base_model.model.lin0"]
    assert layer.fourierft_spectrum["default"].dtype == torch.bfloat16
    assert layer.get_delta_weight("default").dtype == torch.bfloat16
    out = model(input_ids=token_batch())
    assert torch.isfinite(out).all()
