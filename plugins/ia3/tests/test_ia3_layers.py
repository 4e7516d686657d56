"""IA³ layers, config and combining: the behaviour the shared suite does not pin down."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_llama, token_batch
from peft_core.errors import ConfigError, PeftCoreError, UnsupportedOperation
from peft_core.plugins import registry
from peft_core_ia3 import IA3Config, IA3Conv, IA3Linear


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(6, 4)
        self.ff = nn.Linear(4, 5)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.convff = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ff(torch.relu(self.lin(x))), self.convff(torch.relu(self.conv(img)))


CONFIG = {"target_modules": ["lin", "ff", "conv", "convff"], "feedforward_modules": ["ff", "convff"]}


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(3, 6, generator=gen), torch.randn(2, 3, 5, 5, generator=gen)


def _randomize(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "ia3_l" in name:
                p.copy_(1 + torch.randn(p.shape, generator=gen) * 0.3)


def test_vector_shapes_and_identity_init():
    model = get_peft_model(Net(), IA3Config(**CONFIG))
    layers = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules() if isinstance(m, (IA3Linear, IA3Conv))}
    shapes = {n: tuple(m.ia3_l["default"].shape) for n, m in layers.items()}
    assert shapes == {"lin": (4, 1), "ff": (1, 4), "conv": (1, 4, 1, 1), "convff": (1, 4, 1, 1)}
    assert all(bool((m.ia3_l["default"] == 1).all()) for m in layers.values())
    x, img = _inputs()
    base = Net()(x, img)
    out = model(x, img)
    assert all(torch.equal(a, b) for a, b in zip(out, base))


def test_forward_scales_inputs_of_feedforward_and_outputs_of_others():
    model = get_peft_model(Net(), IA3Config(**CONFIG))
    _randomize(model)
    x, img = _inputs()
    ref = Net()
    lin_l = model.base_model.model.lin.ia3_l["default"].detach().flatten()
    ff_l = model.base_model.model.ff.ia3_l["default"].detach().flatten()
    conv_l = model.base_model.model.conv.ia3_l["default"].detach()
    convff_l = model.base_model.model.convff.ia3_l["default"].detach()
    with torch.no_grad():
        h = torch.relu(ref.lin(x) * lin_l)
        expected = ref.ff(h * ff_l)
        g = torch.relu(ref.conv(img) * conv_l)
        expected_img = ref.convff(g * convff_l)
        out, out_img = model(x, img)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out_img, expected_img)


def test_merge_scales_bias_only_for_output_scaling_and_unmerge_restores():
    model = get_peft_model(Net(), IA3Config(**CONFIG))
    _randomize(model)
    x, img = _inputs()
    with torch.no_grad():
        expected = model(x, img)
    inner = model.base_model.model
    before = {k: v.clone() for k, v in Net().state_dict().items()}
    model.merge_adapter()
    lin_l = inner.lin.ia3_l["default"].detach()
    torch.testing.assert_close(inner.lin.base_layer.bias, before["lin.bias"] * lin_l.flatten())
    torch.testing.assert_close(inner.lin.base_layer.weight, before["lin.weight"] * lin_l)
    assert torch.equal(inner.ff.base_layer.bias, before["ff.bias"])  # input scaling leaves the bias
    torch.testing.assert_close(inner.ff.base_layer.weight, before["ff.weight"] * inner.ff.ia3_l["default"].detach())
    torch.testing.assert_close(inner.conv.base_layer.bias, before["conv.bias"] * inner.conv.ia3_l["default"].detach().flatten())
    with torch.no_grad():
        merged = model(x, img)
    for a, b in zip(merged, expected):
        torch.testing.assert_close(a, b)
    model.unmerge_adapter()
    for key, value in before.items():
        module, attr = key.split(".")
        torch.testing.assert_close(getattr(getattr(inner, module).base_layer, attr), value, atol=1e-6, rtol=1e-6)


def test_zero_entries_warn_on_merge_and_unmerge_stays_finite():
    model = get_peft_model(Net(), IA3Config(**CONFIG))
    with torch.no_grad():
        model.base_model.model.lin.ia3_l["default"][0] = 0.0
    with pytest.warns(UserWarning, match="zero entries"):
        model.merge_adapter()
    model.unmerge_adapter()
    lin = model.base_model.model.lin.base_layer
    assert torch.isfinite(lin.weight).all() and torch.isfinite(lin.bias).all()
    assert torch.equal(lin.weight[0], torch.zeros(6))  # information lost by the merge stays lost
    torch.testing.assert_close(lin.weight[1:], Net().lin.weight[1:])


def test_two_adapters_may_disagree_about_feedforward_and_multiply():
    model = get_peft_model(Net(), IA3Config(target_modules=["ff"], feedforward_modules=["ff"]), adapter_name="a")
    model.add_adapter("b", IA3Config(target_modules=["ff"], feedforward_modules=[]))
    layer = model.base_model.model.ff
    assert layer.is_feedforward == {"a": True, "b": False}
    assert tuple(layer.ia3_l["a"].shape) == (1, 4) and tuple(layer.ia3_l["b"].shape) == (5, 1)
    _randomize(model)
    model.base_model.set_adapter(["a", "b"])
    x = torch.randn(3, 4)
    with torch.no_grad():
        expected = Net().ff(x * layer.ia3_l["a"].flatten()) * layer.ia3_l["b"].flatten()
        torch.testing.assert_close(layer(x), expected)
        model.merge_adapter()
        torch.testing.assert_close(layer(x), expected)
        model.unmerge_adapter()
        torch.testing.assert_close(layer.base_layer.weight, Net().ff.weight)


def test_config_validation_and_defaults():
    with pytest.raises(ConfigError, match="subset of target_modules"):
        IA3Config(target_modules=["lin0"], feedforward_modules=["lin1"])
    with pytest.raises(ConfigError, match="feedforward_modules is not set"):
        get_peft_model(mlp(), IA3Config(target_modules=["lin0"]))
    model = get_peft_model(tiny_llama(), IA3Config())
    config = model.peft_config["default"]
    assert config.target_modules == {"k_proj", "v_proj", "down_proj"}
    assert config.feedforward_modules == {"down_proj"}
    down = model.base_model.model.model.layers[0].mlp.down_proj
    assert tuple(down.ia3_l["default"].shape) == (1, 64)


def test_layers_fields_only_written_when_set():
    plain = IA3Config(target_modules=["q_proj"], feedforward_modules=[]).to_dict()
    assert "layers_to_transform" not in plain and "layers_pattern" not in plain
    layered = IA3Config(target_modules=["q_proj"], feedforward_modules=[], layers_to_transform=[1],
                        layers_pattern="layers")
    data = layered.to_dict()
    assert data["layers_to_transform"] == [1] and data["layers_pattern"] == "layers"
    back = IA3Config.from_dict(data)
    assert back.layers_to_transform == [1] and back.target_modules == {"q_proj"}
    model = get_peft_model(tiny_llama(), layered)
    assert [n for n, m in model.named_modules() if isinstance(m, IA3Linear)] == [
        "base_model.model.model.layers.1.self_attn.q_proj"]


def test_registered_with_paper_and_capabilities():
    spec = registry().get("IA3")
    assert spec.config_class is IA3Config and spec.prefix == "ia3_"
    assert spec.paper == "https://arxiv.org/abs/2205.05638"
    from peft_core import IA3Config as exported
    from peft_core import IA3Model

    assert exported is IA3Config
    tuner = IA3Model(Net(), IA3Config(**CONFIG), "default")  # PEFT's tuner class name and signature
    assert sorted(n for n, m in tuner.named_modules() if isinstance(m, (IA3Linear, IA3Conv))) == [
        "model.conv", "model.convff", "model.ff", "model.lin"]


def test_combining_refuses_what_it_cannot_express():
    model = get_peft_model(Net(), IA3Config(**CONFIG), adapter_name="a")
    model.add_adapter("b", IA3Config(**CONFIG))
    model.add_adapter("c", IA3Config(target_modules=["lin", "ff"], feedforward_modules=[]))
    with pytest.raises(UnsupportedOperation, match="linear"):
        model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "x", combination_type="ties", density=0.5)
    with pytest.raises(ConfigError, match="agree on feedforward_modules"):
        model.add_weighted_adapter(["a", "c"], [0.5, 0.5], "y", combination_type="linear")
    assert set(model.peft_config) == {"a", "b", "c"}
    assert not any("ia3_l.y" in n or "ia3_l.x" in n for n, _ in model.named_parameters())
    _randomize(model)
    model.add_weighted_adapter(["a", "b"], [2.0, -1.0], "z", combination_type="linear")
    lin = model.base_model.model.lin
    torch.testing.assert_close(lin.ia3_l["z"], 2 * lin.ia3_l["a"] - lin.ia3_l["b"])
    assert not lin.ia3_l["z"].requires_grad


def test_mixed_batch_with_input_scaling_matches_each_adapter():
    model = get_peft_model(tiny_llama(), IA3Config(target_modules=["v_proj", "down_proj"],
                                                   feedforward_modules=["down_proj"]), adapter_name="a")
    model.add_adapter("b", IA3Config(target_modules=["down_proj"], feedforward_modules=["down_proj"]))
    _randomize(model, seed=4)
    x = token_batch(batch=3)
    with torch.no_grad():
        mixed = model(input_ids=x, adapter_names=["a", "__base__", "b"]).logits
        model.set_adapter("a")
        out_a = model(input_ids=x).logits
        model.set_adapter("b")
        out_b = model(input_ids=x).logits
        with model.disable_adapter():
            base = model(input_ids=x).logits
    torch.testing.assert_close(mixed[0], out_a[0])
    torch.testing.assert_close(mixed[1], base[1])
    torch.testing.assert_close(mixed[2], out_b[2])
    assert not torch.allclose(out_a, out_b)


def test_invalid_values_are_peft_core_errors():
    for bad in ({"init_ia3_weights": "yes"}, {"target_modules": "(", "feedforward_modules": []},
                {"target_modules": ["a"], "layers_pattern": "layers"}):
        with pytest.raises(PeftCoreError):
            IA3Config(**bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IA3Config(target_modules=["a"], feedforward_modules=["a"])  # valid: no warning
