"""Item 5: configs from newer writers load, with exactly one warning listing what was dropped."""

from __future__ import annotations

import json
import warnings

import torch

from peft_core import LoraConfig, PeftConfig, PeftModel
from peft_core.conformance.models import mlp
from reliability_support import IDS, lora_model

NEW_FIELDS = {"future_knob": 3, "quantum_rank": [1, 2], "zz_nested": {"a": {"b": None}}}


def _add_fields(directory, fields) -> None:
    file = directory / "adapter_config.json"
    data = json.loads(file.read_text())
    data.update(fields)
    file.write_text(json.dumps(data, indent=2, sort_keys=True))


def _user_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_config_with_unknown_fields_loads_with_one_warning_listing_all(tmp_path):
    lora_model().save_pretrained(tmp_path)
    _add_fields(tmp_path, NEW_FIELDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(config, LoraConfig) and config.r == 4
    messages = [m for m in _user_warnings(caught) if "future_knob" in m or "quantum_rank" in m or "zz_nested" in m]
    assert len(messages) == 1, messages
    assert all(name in messages[0] for name in NEW_FIELDS)
    assert str(tmp_path / "adapter_config.json") in messages[0]
    assert not hasattr(config, "future_knob")


def test_peft_model_from_pretrained_warns_once_and_works(tmp_path):
    saved = lora_model()
    saved.save_pretrained(tmp_path)
    _add_fields(tmp_path, NEW_FIELDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(mlp(), tmp_path)
    dropped = [m for m in _user_warnings(caught) if "future_knob" in m]
    assert len(dropped) == 1, _user_warnings(caught)
    torch.testing.assert_close(loaded(IDS), saved(IDS))
    # saving again writes only known fields: the result reads back without warnings
    out = tmp_path / "again"
    loaded.save_pretrained(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftConfig.from_pretrained(out)
    assert not [m for m in _user_warnings(caught) if "ignoring" in m]


def test_known_fields_give_no_warning(tmp_path):
    lora_model().save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftConfig.from_pretrained(tmp_path)
    assert not [m for m in _user_warnings(caught) if "ignoring" in m]
