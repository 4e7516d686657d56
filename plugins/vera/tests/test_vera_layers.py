"""VeRA's own behaviour: projection sizing and sharing, both save_projection modes, the forward formula."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.conformance.parity import max_diff, model_output, perturb_trainable, saved_shapes
from peft_core.errors import LoadError, PeftCoreError
from peft_core.plugins import registry
from peft_core_vera import VeraConfig, VeraLinear, projection_pair

TARGETS = ["q_proj", "k_proj", "down_proj"]  # q: 32→32, k: 32→16 (grouped KV), down: 64→32


def _model(**overrides):
    torch.manual_seed(0)
    return get_peft_model(tiny_llama(), VeraConfig(**{"r": 4, "target_modules": TARGETS, **overrides}))


def _layers(model, name="default"):
    return [m for m in model.modules() if isinstance(m, VeraLinear) and m.has_adapter(name)]


def test_projections_are_sized_to_the_largest_layer_held_once_and_sliced_per_layer():
    model = _model()
    store = model.base_model.shared_tensors
    vera_a, vera_b = store.get("vera_A", "default"), store.get("vera_B", "default")
    assert tuple(vera_a.shape) == (4, 64) and tuple(vera_b.shape) == (32, 4)
    assert not vera_a.requires_grad and not vera_b.requires_grad
    layers = _layers(model)
    assert len(layers) == 6 and all(layer.shared_tensors is store for layer in layers)
    k_proj = model.base_model.model.model.layers[0].self_attn.k_proj
    sliced_a, sliced_b = k_proj.projections("default", torch.float32, torch.device("cpu"))
    assert torch.equal(sliced_a, vera_a[:, :32]) and torch.equal(sliced_b, vera_b[:16])
    keys = [k for k in model.state_dict() if "vera_A" in k or "vera_B" in k]
    assert keys == ["base_model.shared_tensors.vera_A.default", "base_model.shared_tensors.vera_B.default"]
    expected_a, expected_b = projection_pair(0, 4, 64, 32)
    assert torch.equal(vera_a, expected_a) and torch.equal(vera_b, expected_b)


def test_the_key_alone_decides_the_projections():
    a1, b1 = projection_pair(3, 4, 10, 6)
    a2, b2 = projection_pair(3, 4, 10, 6)
    a3, _ = projection_pair(4, 4, 10, 6)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)
    bound = (6 / 10) ** 0.5  # Kaiming-uniform over the fan-in
    assert a1.abs().max() <= bound and b1.abs().max() <= (6 / 4) ** 0.5
    state = torch.get_rng_state()
    projection_pair(3, 4, 10, 6)
    assert torch.equal(state, torch.get_rng_state())  # a private generator: the global RNG is untouched


def test_forward_adds_scaled_projection_product():
    model = _model(init_weights=False)
    layer = model.base_model.model.model.layers[1].mlp.down_proj
    x = torch.randn(3, 64)
    lam_b, lam_d = layer.vera_lambda_b["default"].detach(), layer.vera_lambda_d["default"].detach()
    vera_a, vera_b = layer.projections("default", torch.float32, x.device)
    expected = layer.base_layer(x) + lam_b * ((lam_d * (x @ vera_a.T)) @ vera_b.T)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)
        torch.testing.assert_close(layer.get_delta_weight("default"), (lam_b[:, None] * vera_b) @ (lam_d[:, None] * vera_a))


@pytest.mark.parametrize("save_projection", [True, False])
def test_both_save_projection_modes_round_trip(save_projection, tmp_path):
    model = _model(save_projection=save_projection, projection_prng_key=11)
    perturb_trainable(model, seed=3, scale=0.3)
    model.eval()
    model.save_pretrained(tmp_path)
    shapes = saved_shapes(tmp_path)
    assert ("base_model.vera_A" in shapes) == save_projection == ("base_model.vera_B" in shapes)
    assert all(k.startswith("base_model.model.") for k in shapes if "lambda" in k)
    assert ("base_model.shared_tensors.vera_A.default" in model.state_dict()) == save_projection
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert max_diff(model_output(loaded, {"input_ids": token_batch()}), model_output(model, {"input_ids": token_batch()})) == 0


def test_a_file_missing_its_projections_is_refused(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    file = tmp_path / "adapter_model.safetensors"
    state = load_file(str(file))
    del state["base_model.vera_B"]
    save_file(state, str(file), metadata={"format": "pt"})
    with pytest.raises(LoadError, match="lacks base_model.vera_B"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)


def test_projections_that_do_not_fit_are_refused(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    file = tmp_path / "adapter_model.safetensors"
    state = load_file(str(file))
    state["base_model.vera_A"] = state["base_model.vera_A"][:, :40].contiguous()  # down_proj needs 64 inputs
    save_file(state, str(file), metadata={"format": "pt"})
    with pytest.raises(LoadError, match="do not fit"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)


def test_saved_projections_are_ignored_with_a_warning_when_the_config_says_not_to_save(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    config = (tmp_path / "adapter_config.json").read_text().replace('"save_projection": true', '"save_projection": false')
    (tmp_path / "adapter_config.json").write_text(config)
    with pytest.warns(UserWarning, match="save_projection=False"):
        loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert loaded.base_model.shared_tensors.saved("default") == {}


def test_each_adapter_has_its_own_projections_and_deleting_drops_them():
    model = _model()
    model.add_adapter("other", VeraConfig(r=2, target_modules=["q_proj"], projection_prng_key=5))
    store = model.base_model.shared_tensors
    assert tuple(store.get("vera_A", "other").shape) == (2, 32)
    assert torch.equal(store.get("vera_A", "other"), projection_pair(5, 2, 32, 32)[0])
    model.delete_adapter("other")
    assert not store.has("vera_A", "other") and store.has("vera_A", "default")
    assert not any("other" in k for k in model.state_dict())


def test_config_validation_and_registration():
    for bad in ({"r": 0}, {"bias": "lora_only"}, {"vera_dropout": 1.0}, {"save_projection": 1}):
        with pytest.raises(PeftCoreError):
            VeraConfig(target_modules=["q_proj"], **bad)
    with pytest.raises(PeftCoreError, match="cannot adapt|supported kinds"):
        get_peft_model(tiny_llama(), VeraConfig(r=4, target_modules=["embed_tokens"]))
    spec = registry().get("VERA")
    assert spec.paper == "https://arxiv.org/abs/2310.11454" and spec.init_shared is not None
    from peft_core import VeraConfig as exported
    from peft_core import VeraModel

    assert exported is VeraConfig and VeraModel is spec.exports["VeraModel"]


def test_a_failing_init_shared_removes_the_adapter_again(monkeypatch):
    import peft_core_vera.projections as projections

    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def broken(*args, **kwargs):
        raise RuntimeError("no projections today")

    monkeypatch.setattr(projections, "projection_pair", broken)
    with pytest.raises(RuntimeError, match="no projections today"):
        model.add_adapter("second", VeraConfig(r=2, target_modules=["v_proj"]))
    assert set(model.peft_config) == {"default"} and not _layers(model, "second")
    assert not model.base_model.shared_tensors.has("vera_A", "second")
    assert set(model.state_dict()) == set(before)
