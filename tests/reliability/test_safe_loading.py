"""Item 1: loading never executes pickled code, and bad configs name the field and the file."""

from __future__ import annotations

import json
import os
import re
import warnings

import pytest
import torch
from safetensors.torch import load_file

from peft_core import PeftConfig, PeftModel
from peft_core.conformance.models import mlp
from peft_core.errors import ConfigError, LoadError, PeftCoreError, UnknownMethodError
from peft_core.serialization import load_peft_weights
from reliability_support import IDS, assert_unchanged, lora_model, snapshot


class _Evil:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _write_evil_bin(directory, marker) -> None:
    state = {k: v for k, v in load_file(str(directory / "adapter_model.safetensors")).items()}
    state["payload"] = _Evil(str(marker))
    torch.save(state, directory / "adapter_model.bin")


def test_the_payload_is_live(tmp_path):
    # guards the tests below: with full unpickling the payload really runs
    lora_model().save_pretrained(tmp_path)
    _write_evil_bin(tmp_path, tmp_path / "pwned")
    torch.load(tmp_path / "adapter_model.bin", weights_only=False)
    assert (tmp_path / "pwned").is_dir()


def test_malicious_bin_never_executes_and_leaves_the_model_alone(tmp_path):
    lora_model().save_pretrained(tmp_path)
    marker = tmp_path / "pwned"
    _write_evil_bin(tmp_path, marker)
    (tmp_path / "adapter_model.safetensors").unlink()
    model = mlp()
    before = snapshot(model)
    with pytest.raises(LoadError, match="adapter_model.bin"):
        PeftModel.from_pretrained(model, tmp_path)
    with pytest.raises(LoadError):
        load_peft_weights(tmp_path)
    assert not marker.exists(), "a pickled payload was executed"
    assert_unchanged(model, before)


def test_safetensors_is_preferred_over_bin(tmp_path):
    saved = lora_model()
    expected = saved(IDS)
    saved.save_pretrained(tmp_path)
    marker = tmp_path / "pwned"
    _write_evil_bin(tmp_path, marker)  # next to the safetensors file: must not even be opened
    loaded = PeftModel.from_pretrained(mlp(), tmp_path)
    torch.testing.assert_close(loaded(IDS), expected)
    assert "payload" not in load_peft_weights(tmp_path)
    assert not marker.exists()


def test_clean_bin_loads_when_no_safetensors(tmp_path):
    saved = lora_model()
    saved.save_pretrained(tmp_path, safe_serialization=False)
    assert not (tmp_path / "adapter_model.safetensors").exists()
    loaded = PeftModel.from_pretrained(mlp(), tmp_path)
    torch.testing.assert_close(loaded(IDS), saved(IDS))


# -- configs: every failure names the field and the file -------------------------------------

_LORA = {"peft_type": "LORA", "target_modules": ["lin0"], "r": 4}

CASES = [
    # (label, config JSON value, field the message must name, error class)
    ("wrong type r", {**_LORA, "r": "4"}, "r", ConfigError),
    ("wrong type float for int", {**_LORA, "r": 4.5}, "r", ConfigError),
    ("bool for int", {**_LORA, "r": True}, "r", ConfigError),
    ("negative rank", {**_LORA, "r": -3}, "r", ConfigError),
    ("zero rank", {**_LORA, "r": 0}, "r", ConfigError),
    ("wrong type lora_alpha", {**_LORA, "lora_alpha": [8]}, "lora_alpha", ConfigError),
    ("wrong type target_modules", {**_LORA, "target_modules": 5}, "target_modules", ConfigError),
    ("wrong element type", {**_LORA, "target_modules": ["lin0", 3]}, "target_modules", ConfigError),
    ("wrong type inference_mode", {**_LORA, "inference_mode": "yes"}, "inference_mode", ConfigError),
    ("bad dropout", {**_LORA, "lora_dropout": 2.0}, "lora_dropout", ConfigError),
    ("bad task_type", {**_LORA, "task_type": "DANCE"}, "task_type", ConfigError),
    ("unknown peft_type", {**_LORA, "peft_type": "NOT_A_METHOD"}, "peft_type", UnknownMethodError),
    ("missing peft_type", {"r": 4, "target_modules": ["lin0"]}, "peft_type", ConfigError),
    ("peft_type not a string", {**_LORA, "peft_type": 7}, "peft_type", ConfigError),
    ("empty peft_type", {**_LORA, "peft_type": ""}, "peft_type", ConfigError),
]


@pytest.mark.parametrize(("data", "field", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_names_field_and_file(tmp_path, data, field, error):
    file = tmp_path / "adapter_config.json"
    file.write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            PeftConfig.from_pretrained(tmp_path)
    assert isinstance(info.value, PeftCoreError)
    message = str(info.value)
    assert str(file) in message, message
    rest = message.replace(str(file), "")  # the field must be named outside the path
    assert re.search(rf"(?<![\w]){re.escape(field)}(?![\w])", rest), message


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"LORA"', "null", "\xff\xfe", "[" * 100_000, "1" * 5000])
def test_unreadable_config_file_is_a_config_error_naming_the_file(tmp_path, text):
    file = tmp_path / "adapter_config.json"
    file.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        PeftConfig.from_pretrained(tmp_path)
    assert str(file) in str(info.value)


def test_bad_config_through_peft_model_from_pretrained_leaves_model_alone(tmp_path):
    lora_model().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    data["r"] = -1
    (tmp_path / "adapter_config.json").write_text(json.dumps(data))
    model = mlp()
    before = snapshot(model)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "adapter_config.json"))):
        PeftModel.from_pretrained(model, tmp_path)
    assert_unchanged(model, before)
