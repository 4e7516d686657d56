"""DoRA behaviour: the math, zero-norm rows, merging, caching, configuration."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import mlp, tiny_llama, token_batch
from peft_core.errors import ConfigError
from peft_core_dora import DoraVariant


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, 6)
        self.lin = nn.Linear(6, 5)
        self.conv = nn.Conv2d(5, 4, 3, padding=1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.lin(self.emb(input_ids))  # (b, l, 5)
        img = h.transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, 3)  # (b, 5, l, 3)
        return self.conv(img)


def _dora(model, **kw):
    kw.setdefault("target_modules", ["emb", "lin", "conv"])
    kw.setdefault("r", 2)
    return get_peft_model(model, LoraConfig(use_dora=True, **kw))


def _perturb(model, scale=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def test_linear_forward_is_the_dora_formula():
    torch.manual_seed(0)
    base = nn.Linear(7, 5)
    wrapped = nn.Sequential(copy.deepcopy(base))
    model = get_peft_model(wrapped, LoraConfig(target_modules=["0"], r=3, lora_alpha=6, use_dora=True))
    _perturb(model)
    layer = model.base_model.model[0]
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"]
    V = base.weight + 2.0 * B @ A
    expected_w = m[:, None] * V / V.norm(dim=1, keepdim=True)
    x = torch.randn(4, 7)
    torch.testing.assert_close(model(x), x @ expected_w.T + base.bias, atol=1e-5, rtol=1e-5)


def test_magnitude_starts_at_the_row_norms_and_model_is_identity():
    model = Net()
    x = token_batch(2, 5, seed=1) % 11
    expected = model(x)
    peft_model = _dora(Net())
    torch.testing.assert_close(peft_model(x), expected, atol=1e-5, rtol=1e-5)
    lin = peft_model.base_model.model.lin
    torch.testing.assert_close(lin.lora_magnitude_vector["default"], model.lin.weight.norm(dim=1))
    emb = peft_model.base_model.model.emb
    torch.testing.assert_close(emb.lora_magnitude_vector["default"], model.emb.weight.T.norm(dim=1))
    conv = peft_model.base_model.model.conv
    assert conv.lora_magnitude_vector["default"].shape == (1, 4, 1, 1)


def test_magnitude_trains_and_is_saved(tmp_path):
    model = _dora(Net())
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in names if "magnitude" in n} == {
        f"base_model.model.{t}.lora_magnitude_vector.default" for t in ("emb", "lin", "conv")}
    x = token_batch(2, 5, seed=1) % 11
    model(x).square().mean().backward()
    for t in ("emb", "lin", "conv"):
        grad = getattr(model.base_model.model, t).lora_magnitude_vector["default"].grad
        assert grad is not None and grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert {k for k in keys if "magnitude" in k} == {f"base_model.model.{t}.lora_magnitude_vector"
                                                     for t in ("emb", "lin", "conv")}


# -- zero-norm rows (Hugging Face PEFT issue 2049) --------------------------------------------


def _zero_row_net() -> Net:
    net = Net()
    with torch.no_grad():
        net.lin.weight[1] = 0  # a dead output row
        net.conv.weight[2] = 0  # a dead output channel
        net.emb.weight[:, 3] = 0  # an embedding dimension that is zero for every token
    return net


def test_zero_norm_rows_give_finite_outputs_and_gradients():
    model = _dora(_zero_row_net())  # B = 0 at init: ‖W + sBA‖ = 0 on those rows
    x = token_batch(2, 5, seed=1) % 11
    out = model(x)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the zero row outputs bias only (no direction), and matches the base model's output
    torch.testing.assert_close(out, _zero_row_net()(x), atol=1e-5, rtol=1e-5)


def test_zero_norm_rows_with_a_loaded_magnitude_stay_finite_and_merge_exactly():
    model = _dora(_zero_row_net())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "magnitude" in name:
                p.fill_(2.0)  # a non-zero magnitude on a zero-norm row: 2 · 0/0 in PEFT
    x = token_batch(2, 5, seed=1) % 11
    out = model(x)
    assert torch.isfinite(out).all()
    before = {k: v.clone() for k, v in model.base_model.model.state_dict().items() if "base_layer" in k}
    model.merge_adapter()
    assert all(torch.isfinite(v).all() for v in model.base_model.model.state_dict().values())
    torch.testing.assert_close(model(x), out, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    after = {k: v for k, v in model.base_model.model.state_dict().items() if "base_layer" in k}
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=1e-6, msg=key)


def test_peft_itself_gives_nan_on_zero_norm_rows():
    """The bug this plugin fixes exists in the reference implementation (so the test above means something)."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_zero_row_net(), peft.LoraConfig(target_modules=["lin"], r=2, use_dora=True))
    out = model(token_batch(2, 5, seed=1) % 11)
    assert not torch.isfinite(out).all()


# -- merging ---------------------------------------------------------------------------------


def test_merge_formula_and_unmerge_restore():
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(6, 4)), LoraConfig(target_modules=["0"], r=2, use_dora=True))
    _perturb(model)
    layer = model.base_model.model[0]
    W = layer.base_layer.weight.detach().clone()
    delta = layer.get_delta_weight("default").detach()
    m = layer.lora_magnitude_vector["default"].detach()
    x = torch.randn(3, 6)
    out = model(x)
    model.merge_adapter()
    V = W + delta
    torch.testing.assert_close(layer.base_layer.weight, m[:, None] * V / V.norm(dim=1, keepdim=True))
    torch.testing.assert_close(model(x), out, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(layer.base_layer.weight, W, atol=1e-6, rtol=1e-6)


def test_two_active_adapters_merge_to_the_forward():
    """Norms are taken on the unmerged base weight, as the forward does, when merging one after another."""
    model = get_peft_model(mlp(), LoraConfig(target_modules=["lin0", "conv1d", "emb"], r=2, use_dora=True),
                           adapter_name="a")
    model.add_adapter("b", LoraConfig(target_modules=["lin0", "conv1d"], r=3, use_dora=True, init_lora_weights=False))
    model.add_adapter("c", LoraConfig(target_modules=["lin0"], r=2))  # a plain LoRA adapter in between
    model.set_adapter(["a", "c", "b"])
    _perturb(model, scale=0.1)  # (large magnitude changes make unmerging ill-conditioned: W = W'·‖V‖/m)
    x = token_batch()
    model.eval()
    out = model(x)
    base = model.base_model.model.lin0.base_layer.weight.detach().clone()
    model.merge_adapter()
    torch.testing.assert_close(model(x), out, atol=1e-4, rtol=1e-4)
    model.unmerge_adapter()
    torch.testing.assert_close(model.base_model.model.lin0.base_layer.weight, base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x), out, atol=1e-5, rtol=1e-5)


# -- caching ---------------------------------------------------------------------------------


def test_norm_cache_follows_factor_base_and_scaling_changes():
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(6, 4)), LoraConfig(target_modules=["0"], r=2, use_dora=True))
    _perturb(model)
    layer = model.base_model.model[0]
    variant = layer.lora_variant["default"]
    assert isinstance(variant, DoraVariant)

    def exact():
        V = layer.base_layer.weight + layer.get_delta_weight("default")
        return V.detach().norm(dim=1)

    first = variant.weight_norm(layer, "default")
    assert variant.weight_norm(layer, "default") is first  # cached
    torch.testing.assert_close(first, exact(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        layer.lora_A["default"].weight.mul_(2)  # an optimizer step: in place
    torch.testing.assert_close(variant.weight_norm(layer, "default"), exact(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        layer.base_layer.weight.add_(1.0)  # the base changed (merge, load)
    torch.testing.assert_close(variant.weight_norm(layer, "default"), exact(), atol=1e-5, rtol=1e-5)
    layer.set_scale("default", 3.0)
    torch.testing.assert_close(variant.weight_norm(layer, "default"), exact(), atol=1e-5, rtol=1e-5)


def test_training_steps_match_an_uncached_reference():
    """Several optimizer steps: the cached fast forward follows the textbook formula every step."""
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    model = get_peft_model(nn.Sequential(copy.deepcopy(base)), LoraConfig(target_modules=["0"], r=2, use_dora=True,
                                                                            init_lora_weights=False))
    layer = model.base_model.model[0]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(5, 8)
    for _ in range(3):
        opt.zero_grad()
        out = model(x)
        A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        m = layer.lora_magnitude_vector["default"]
        V = base.weight + layer.scaling["default"] * B @ A
        ref = m * (x @ V.T) / V.detach().norm(dim=1) + base.bias
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        out.square().sum().backward()
        opt.step()


def test_inference_mode_cache_does_not_break_training():
    model = _dora(Net())
    x = token_batch(2, 5, seed=1) % 11
    with torch.inference_mode():
        model(x)
    model(x).sum().backward()  # a norm cached under inference_mode must not be saved for backward


def test_dropout_in_training_matches_eval_formula_without_dropout_rows():
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(6, 4)), LoraConfig(target_modules=["0"], r=2, use_dora=True,
                                                                      lora_dropout=0.5))
    _perturb(model)
    x = torch.randn(3, 6)
    model.eval()
    expected = model(x)
    model.train()
    torch.manual_seed(1)
    out = model(x)
    assert torch.isfinite(out).all() and not torch.allclose(out, expected)
    model.eval()
    torch.testing.assert_close(model(x), expected)


# -- configuration ---------------------------------------------------------------------------


def test_lora_bias_with_dora_is_refused():
    with pytest.raises(ConfigError, match="lora_bias=True is not supported with use_dora=True"):
        get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], use_dora=True, lora_bias=True))


def test_delete_dora_adapter_leaves_no_magnitude():
    model = _dora(Net())
    model.add_adapter("other", LoraConfig(target_modules=["lin"], r=2, use_dora=True))
    model.delete_adapter("other")
    lin = model.base_model.model.lin
    assert "other" not in lin.lora_magnitude_vector and "other" not in lin.lora_variant
    assert not any("other" in k for k in model.state_dict())


def test_bf16_base_with_fp32_adapters():
    model = _dora(tiny_llama().to(torch.bfloat16), target_modules=["q_proj", "v_proj"])
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_magnitude_vector["default"].dtype == torch.float32
    out = model(input_ids=token_batch()).logits
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(layer.lora_magnitude_vector["default"].grad).all()


def test_plugin_is_discovered_and_serves_use_dora():
    from peft_core.plugins import hook, plugin_infos

    served = {}
    for flags in hook().peft_core_lora_variant_flags():
        served.update(flags or {})
    assert served.get("use_dora") == "peft-core-dora"
    assert any(info.name == "dora" for info in plugin_infos())


def test_unmerge_without_merge_is_a_clear_error():
    from peft_core.errors import MergeError

    model = _dora(Net())
    layer = model.base_model.model.lin
    with pytest.raises(MergeError, match="never merged"):
        layer.unmerged_weight(layer.base_layer.weight.detach(), "default")


def test_a_hook_on_a_factor_sees_the_call_and_the_output_stays():
    """The fused DoRA product uses the factors' weights; a hooked factor is called as a module instead."""
    model = _dora(Net(), target_modules=["lin"])
    _perturb(model)
    model.eval()
    x = torch.randint(0, 11, (2, 4))
    expected = model(input_ids=x)
    seen = []
    layer = model.base_model.model.lin
    layer.lora_A["default"].register_forward_hook(lambda *args: seen.append("A"))
    layer.lora_B["default"].register_forward_hook(lambda *args: seen.append("B"))
    torch.testing.assert_close(model(input_ids=x), expected, rtol=1e-6, atol=1e-6)
    assert seen == ["A", "B"]
