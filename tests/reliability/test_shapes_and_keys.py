"""Item 2: checkpoints that don't fit fail clearly, and a failed load changes nothing."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_core import PeftModel, set_peft_model_state_dict
from peft_core.conformance.models import MLP, mlp
from peft_core.errors import LoadError
from reliability_support import IDS, assert_unchanged, lora_model, snapshot

A0 = "base_model.model.lin0.lora_A.weight"
B1 = "base_model.model.lin1.lora_B.weight"


def _rewrite(directory, change) -> None:
    file = directory / "adapter_model.safetensors"
    state = load_file(str(file))
    change(state)
    save_file(state, str(file), metadata={"format": "pt"})


def test_wrong_base_model_names_key_both_shapes_and_cause(tmp_path):
    lora_model().save_pretrained(tmp_path)  # lin0 is Linear(16 -> 24)
    torch.manual_seed(0)
    wider = MLP(dim=32).eval()  # lin0 is Linear(32 -> 24): A is (4, 32) here
    before = snapshot(wider)
    with pytest.raises(LoadError) as info:
        PeftModel.from_pretrained(wider, tmp_path)
    message = str(info.value)
    assert A0 in message and str(tmp_path) in message
    assert "(4, 16)" in message and "(4, 32)" in message
    assert "different base model" in message and "rank" in message
    assert_unchanged(wider, before)


def test_wrong_rank_in_checkpoint(tmp_path):
    lora_model().save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: s.__setitem__(B1, torch.zeros(5, 8)))
    model = mlp()
    before = snapshot(model)
    with pytest.raises(LoadError, match=re.escape(B1)) as info:
        PeftModel.from_pretrained(model, tmp_path)
    assert "(5, 8)" in str(info.value) and "(5, 4)" in str(info.value)
    assert_unchanged(model, before)


def _with_missing_and_unexpected(tmp_path):
    lora_model().save_pretrained(tmp_path)

    def change(state):
        del state[B1]
        state["base_model.model.norm.lora_A.weight"] = torch.zeros(4, 24)

    _rewrite(tmp_path, change)


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    _with_missing_and_unexpected(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(mlp(), tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert B1 in text and "norm.lora_A.weight" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.load_adapter(tmp_path, adapter_name="again")
    assert result.missing_keys == [B1]
    assert result.unexpected_keys == ["base_model.model.norm.lora_A.weight"]


def test_strict_from_pretrained_refuses_and_leaves_model_alone(tmp_path):
    _with_missing_and_unexpected(tmp_path)
    model = mlp()
    before = snapshot(model)
    with pytest.raises(LoadError, match="strict") as info:
        PeftModel.from_pretrained(model, tmp_path, strict=True)
    assert B1 in str(info.value) and "norm.lora_A.weight" in str(info.value) and str(tmp_path) in str(info.value)
    assert_unchanged(model, before)


@pytest.mark.parametrize("what", ["missing", "unexpected"])
def test_strict_load_adapter_refuses_each_kind_and_leaves_peft_model_alone(tmp_path, what):
    saved = tmp_path / "saved"
    lora_model(seed=1).save_pretrained(saved)
    if what == "missing":
        _rewrite(saved, lambda s: s.pop(B1))
    else:
        _rewrite(saved, lambda s: s.__setitem__("base_model.model.norm.lora_A.weight", torch.zeros(4, 24)))
    model = lora_model()
    model.add_adapter("other", lora_model().peft_config["default"].copy(r=2))
    model.set_adapter("default")
    for name, param in model.named_parameters():  # an unusual but legal state must survive too
        if "lora_A.other" in name:
            param.requires_grad_(True)
    before = snapshot(model)
    with pytest.raises(LoadError, match="strict"):
        model.load_adapter(saved, adapter_name="third", strict=True)
    assert_unchanged(model, before)
    assert "third" not in model.peft_config
    # non-strict: the same file loads, with the problem reported
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_adapter(saved, adapter_name="third")
    assert any(("missing" if what == "missing" else "unexpected") in str(w.message) for w in caught)


def test_failed_load_adapter_keeps_outputs_active_adapter_and_configs(tmp_path):
    lora_model().save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: s.__setitem__(A0, torch.zeros(4, 99)))
    model = lora_model(seed=2)
    model.train()
    out = model(IDS).detach()
    before = snapshot(model)
    with pytest.raises(LoadError):
        model.load_adapter(tmp_path, adapter_name="bad")
    assert_unchanged(model, before)
    torch.testing.assert_close(model(IDS), out, atol=0, rtol=0)


def test_set_state_dict_on_existing_adapter_copies_nothing_when_one_shape_is_wrong():
    model = lora_model()
    state = {
        A0: torch.full((4, 16), 7.0),  # fits: must NOT be copied, because another key does not fit
        B1: torch.zeros(5, 9),
    }
    before = snapshot(model)
    with pytest.raises(LoadError, match=re.escape(B1)):
        set_peft_model_state_dict(model, state)
    assert_unchanged(model, before)
