"""Item 3: adapter names can never make save_pretrained write outside its directory."""

from __future__ import annotations

import pytest

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import mlp
from peft_core.errors import AdapterNameError
from peft_core.names import validate_adapter_name
from reliability_support import assert_unchanged, lora_config, lora_model, snapshot

BAD_NAMES = [
    "", "..", ".", "../evil", "../../etc", "a/b", "/abs", "a\\b", "..\\evil", "sub/../..", "a b", "a\x00b",
    "x" + "/" * 3, "~", "lora_", "lora_default", "lora_A", None, 3, ("a",),
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_validator_refuses(name):
    with pytest.raises(AdapterNameError):
        validate_adapter_name(name, prefixes=("lora_",))


@pytest.mark.parametrize("name", ["default", "other", "task-2", "A_b-9"])
def test_validator_accepts_plain_names(name):
    assert validate_adapter_name(name, prefixes=("lora_",)) == name


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_no_entry_point_accepts_a_bad_name_and_nothing_is_written(tmp_path, name):
    inside = tmp_path / "deep" / "save"
    inside.mkdir(parents=True)
    lora_model().save_pretrained(inside)

    plain = mlp()
    before_plain = snapshot(plain)
    with pytest.raises(AdapterNameError):
        get_peft_model(plain, lora_config(), adapter_name=name)
    with pytest.raises(AdapterNameError):
        PeftModel.from_pretrained(plain, inside, adapter_name=name)
    assert_unchanged(plain, before_plain)

    model = lora_model()
    before = snapshot(model)
    with pytest.raises(AdapterNameError):
        model.add_adapter(name, lora_config())
    with pytest.raises(AdapterNameError):
        model.load_adapter(inside, adapter_name=name)
    assert_unchanged(model, before)

    model.save_pretrained(inside / "out", selected_adapters=None)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert all(p.startswith("deep") for p in written), written


def test_save_pretrained_refuses_a_smuggled_name(tmp_path):
    # even a name forced into the config dict past validation must not escape the directory
    model = lora_model()
    model.peft_config["../escaped"] = model.peft_config["default"]
    target = tmp_path / "a" / "b"
    with pytest.raises(AdapterNameError):
        model.save_pretrained(target, selected_adapters=["default", "../escaped"])
    assert not (tmp_path / "a" / "escaped").exists()
    assert not target.exists()  # refused before anything was written
