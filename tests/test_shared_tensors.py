"""Tuner-level per-adapter tensors (``AdapterModel.shared_tensors``): saved, loaded, moved and deleted with their adapter."""

from __future__ import annotations

import pytest
import torch

from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import mlp
from peft_core.errors import AdapterNameError
from peft_core.serialization import get_peft_model_state_dict, set_peft_model_state_dict
from peft_core.shared import SharedTensors


def _model():
    model = get_peft_model(mlp(), LoraConfig(target_modules=["lin0"], r=2), adapter_name="a")
    model.add_adapter("b", LoraConfig(target_modules=["lin0"], r=2))
    return model


def test_persistent_entries_are_saved_under_tuner_level_keys_and_loaded_back():
    model = _model()
    store = model.base_model.shared_tensors
    store.add("proj", "a", torch.arange(6.0).reshape(2, 3))
    store.add("hidden", "a", torch.ones(2), persistent=False)
    store.add("proj", "b", torch.zeros(2, 3))
    saved = get_peft_model_state_dict(model, adapter_name="a")
    assert torch.equal(saved["base_model.proj"], torch.arange(6.0).reshape(2, 3))
    assert "base_model.hidden" not in saved  # non-persistent: rebuilt by the method, never saved
    assert "base_model.shared_tensors.proj.a" in model.state_dict()
    assert "base_model.shared_tensors.hidden.a" not in model.state_dict()
    result = set_peft_model_state_dict(model, {"base_model.proj": torch.full((2, 3), 7.0)}, adapter_name="b")
    assert "base_model.proj" not in result.unexpected_keys
    assert torch.equal(store.get("proj", "b"), torch.full((2, 3), 7.0))
    assert torch.equal(store.get("proj", "a"), torch.arange(6.0).reshape(2, 3))  # the other adapter's is its own


def test_deleting_an_adapter_drops_its_shared_tensors_only():
    model = _model()
    store = model.base_model.shared_tensors
    store.add("proj", "a", torch.ones(2))
    store.add("proj", "b", torch.ones(2))
    store.add("only_b", "b", torch.ones(1))
    model.delete_adapter("b")
    assert not store.has("proj", "b") and store.has("proj", "a")
    assert not hasattr(store, "only_b")  # empty holders go too
    assert not any(".b" in key for key in model.state_dict() if "shared_tensors" in key)
    with pytest.raises(AdapterNameError, match="no shared tensor"):
        store.get("proj", "b")


def test_entries_follow_dtype_and_replace_cleanly():
    store = SharedTensors()
    store.add("x", "a", torch.ones(3))
    store.add("x", "a", torch.zeros(4), persistent=False)  # replacing also changes persistence
    assert store.get("x", "a").shape == (4,) and store.saved("a") == {}
    store.to(torch.float64)
    assert store.get("x", "a").dtype == torch.float64
