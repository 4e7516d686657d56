"""DeLoRA's defining behaviour: normalized rank-one terms, an update bounded by λ, fixed column norms."""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_gpt2, tiny_llama, token_batch
from peft_core.errors import TargetModulesError
from peft_core_delora import DeloraConfig, DeloraLayer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _lin0(config: DeloraConfig) -> DeloraLayer:
    model = get_peft_model(mlp(), config)
    return model.base_model.model.lin0


def test_update_norm_is_bounded_by_lambda_whatever_the_factors():
    """With unit column norms, ‖ΔW‖_F ≤ λ however large A and B grow (the decoupling of the paper)."""
    layer = _lin0(DeloraConfig(target_modules=["lin0"], r=4, delora_lambda=2.0, init_weights=False))
    with torch.no_grad():
        layer.delora_w_norm["default"].fill_(1.0)
        for scale in (1e-2, 1.0, 1e3):
            layer.delora_A["default"].mul_(scale)
            layer.delora_B["default"].mul_(scale)
            norm = layer.get_delta_weight("default").norm()
            assert 0 < norm <= 2.0 + 1e-5


def test_one_aligned_rank_reaches_lambda_over_r():
    """A single nonzero rank-one term has norm exactly λ/r: the bound is tight, and λ alone sets the strength."""
    layer = _lin0(DeloraConfig(target_modules=["lin0"], r=2, delora_lambda=3.0))
    with torch.no_grad():
        layer.delora_w_norm["default"].fill_(1.0)
        layer.delora_B["default"].zero_()
        layer.delora_B["default"][:, 0] = torch.randn(24) * 50
        assert torch.allclose(layer.get_delta_weight("default").norm(), torch.tensor(1.5), atol=1e-5)


def test_columns_are_scaled_by_the_base_weight_norms_taken_at_creation():
    base = mlp()
    expected = base.lin0.weight.detach().norm(dim=0)
    model = get_peft_model(base, DeloraConfig(target_modules=["lin0"], r=3, init_weights=False))
    layer = model.base_model.model.lin0
    assert torch.allclose(layer.delora_w_norm["default"], expected)
    assert not layer.delora_w_norm["default"].requires_grad
    assert "delora_w_norm.default" in dict(layer.named_buffers())
    delta = layer.get_delta_weight("default")
    with torch.no_grad():
        layer.delora_w_norm["default"].mul_(2.0)
    assert torch.allclose(layer.get_delta_weight("default"), 2 * delta)


def test_forward_equals_merged_weight_and_lambda_gets_a_gradient():
    layer = _lin0(DeloraConfig(target_modules=["lin0"], r=3, init_weights=False))
    x = torch.randn(4, 16)
    out = layer(x)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.base_layer.weight + layer.get_delta_weight("default"),
                                              layer.base_layer.bias)
    assert torch.allclose(out, expected, atol=1e-5)
    out.sum().backward()
    assert layer.delora_lambda["default"].grad is not None and layer.delora_lambda["default"].grad.abs() > 0
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == [
        "delora_A.default", "delora_B.default", "delora_lambda.default"]


def test_module_dropout_acts_only_in_training():
    layer = _lin0(DeloraConfig(target_modules=["lin0"], r=3, module_dropout=0.5, init_weights=False))
    x = torch.randn(64, 16)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    torch.manual_seed(0)
    first = layer(x)
    assert not torch.allclose(first, layer(x))


def test_identity_at_init_only_with_init_weights():
    inputs = {"input_ids": token_batch()}
    with torch.no_grad():
        base = tiny_llama()(**inputs).logits
        same = get_peft_model(tiny_llama(), DeloraConfig(target_modules=["v_proj"]))(**inputs).logits
        random = DeloraConfig(target_modules=["v_proj"], init_weights=False)
        moved = get_peft_model(tiny_llama(), random)(**inputs).logits
    assert torch.equal(same, base)
    assert not torch.allclose(moved, base)


def test_rank_and_lambda_patterns():
    config = DeloraConfig(target_modules=["q_proj", "v_proj"], r=4, delora_lambda=15,
                          rank_pattern={"v_proj": 2}, lambda_pattern={r"layers\.1\.self_attn\.q_proj": 3})
    model = get_peft_model(tiny_llama(), config)
    layers = {n.removeprefix("base_model.model.model."): m for n, m in model.named_modules()
              if isinstance(m, DeloraLayer)}
    assert {n: m.r["default"] for n, m in layers.items()} == {
        "layers.0.self_attn.q_proj": 4, "layers.0.self_attn.v_proj": 2,
        "layers.1.self_attn.q_proj": 4, "layers.1.self_attn.v_proj": 2}
    assert layers["layers.1.self_attn.q_proj"].delora_lambda["default"].item() == 3
    assert layers["layers.0.self_attn.q_proj"].delora_lambda["default"].item() == 15


def test_conv1d_layers_are_refused_clearly():
    with pytest.raises(TargetModulesError, match="nn.Linear"):
        get_peft_model(tiny_gpt2(), DeloraConfig(target_modules=["c_attn"]))
