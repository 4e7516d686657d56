"""PeftConfig / LoraConfig: dict and JSON round trips, tolerant loading, validation, lazy exports."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
from torch import nn

import peft_core
from peft_core import (
    ConfigError,
    LoadError,
    LoraConfig,
    PeftConfig,
    PeftCoreError,
    PluginNotInstalledError,
    TaskType,
    UnknownMethodError,
    get_peft_model,
)
from peft_core.config import CONFIG_NAME, PEFT_FORMAT_VERSION
from peft_core.known import _PLUGINS
from peft_core.plugins import registry, reload_plugins


def _write(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(data))
    return directory


def _lora_dict(**changes) -> dict:
    data = LoraConfig(target_modules=["q_proj"]).to_dict()
    data.update(changes)
    return data


# -- dict round trip --------------------------------------------------------------------------


def test_to_dict_is_json_ready():
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["v_proj", "q_proj", "q_proj"],
                        exclude_modules={"b", "a"}, task_type=TaskType.CAUSAL_LM, rank_pattern={"q_proj": 2})
    data = config.to_dict()
    assert data["peft_type"] == "LORA"
    assert data["task_type"] == "CAUSAL_LM" and type(data["task_type"]) is str
    assert data["target_modules"] == ["q_proj", "v_proj"]  # a set becomes a (sorted) list
    assert data["exclude_modules"] == ["a", "b"]
    assert data["rank_pattern"] == {"q_proj": 2}
    assert data["peft_version"] == PEFT_FORMAT_VERSION
    assert set(data) == {f.name for f in dataclasses.fields(LoraConfig)}
    json.dumps(data)  # serializable as is


def test_from_dict_round_trip_and_base_class_dispatch():
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["v_proj", "q_proj"], lora_dropout=0.1,
                        task_type="SEQ_CLS", layers_to_transform=[0], layers_pattern="layers", bias="lora_only")
    again = LoraConfig.from_dict(config.to_dict())
    assert again == config
    assert again.target_modules == {"q_proj", "v_proj"} and again.task_type is TaskType.SEQ_CLS
    dispatched = PeftConfig.from_dict(config.to_dict())
    assert type(dispatched) is LoraConfig and dispatched == config
    # lower-case peft_type still dispatches
    assert type(PeftConfig.from_dict({"peft_type": "lora", "target_modules": ["x"]})) is LoraConfig


def test_from_dict_overrides_and_does_not_mutate_input():
    data = _lora_dict()
    frozen = json.dumps(data, sort_keys=True)
    config = PeftConfig.from_dict(data, inference_mode=True, r=2)
    assert config.inference_mode is True and config.r == 2
    assert json.dumps(data, sort_keys=True) == frozen


# -- files ----------------------------------------------------------------------------------


def test_save_pretrained_writes_json_like_peft(tmp_path):
    config = LoraConfig(r=4, target_modules=["v_proj", "q_proj"], task_type="CAUSAL_LM")
    config.save_pretrained(tmp_path)
    text = (tmp_path / CONFIG_NAME).read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True)  # sorted keys, indent 2, no trailing newline
    assert list(data) == sorted(data)
    assert data["target_modules"] == ["q_proj", "v_proj"]
    assert text.startswith('{\n  "alora_invocation_tokens": null,\n')
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_save_pretrained_extra_kwargs_and_file_target(tmp_path):
    LoraConfig(target_modules=["q"]).save_pretrained(tmp_path, auto_mapping={"base_model_class": "X"})
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["auto_mapping"] == {"base_model_class": "X"}
    file = tmp_path / "a_file"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        LoraConfig().save_pretrained(file)


def test_from_pretrained_round_trip_and_dispatch(tmp_path):
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], use_rslora=True,
                        alpha_pattern={"v_proj": 8}, modules_to_save=["score"], task_type="SEQ_CLS")
    config.save_pretrained(tmp_path / "a")
    loaded = PeftConfig.from_pretrained(tmp_path / "a")
    assert type(loaded) is LoraConfig and loaded == config
    assert LoraConfig.from_pretrained(str(tmp_path / "a")) == config
    # a subfolder, and a path to the file itself
    config.save_pretrained(tmp_path / "b" / "sub")
    assert PeftConfig.from_pretrained(tmp_path / "b", subfolder="sub") == config
    assert PeftConfig.from_pretrained(tmp_path / "a" / CONFIG_NAME) == config
    # keyword overrides win over the file
    assert PeftConfig.from_pretrained(tmp_path / "a", inference_mode=True).inference_mode is True


def test_from_pretrained_missing_or_broken_files(tmp_path):
    with pytest.raises(LoadError, match="no adapter_config.json") as info:
        PeftConfig.from_pretrained(tmp_path / "nowhere")
    assert "local directories" in str(info.value)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        PeftConfig.from_pretrained(tmp_path / "bad")
    _write(tmp_path / "list", [])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="JSON object"):
        PeftConfig.from_pretrained(tmp_path / "list")
    _write(tmp_path / "untyped", {"r": 8})
    with pytest.raises(ConfigError, match="peft_type"):
        PeftConfig.from_pretrained(tmp_path / "untyped")


@pytest.fixture
def without_ia3(monkeypatch):
    """Plugins as installed, but with the IA³ plugin blocked: a known method that is not installed."""
    monkeypatch.setenv("PEFT_CORE_DISABLE_PLUGINS", "ia3")
    reload_plugins()
    yield
    monkeypatch.undo()
    reload_plugins()


def test_unknown_method_says_what_to_install(tmp_path, without_ia3):
    missing = [(t, d) for t, (d, _) in _PLUGINS.items() if t not in registry()]
    assert missing, "every known method is installed; this test needs one that is not"
    peft_type, dist = missing[0]
    _write(tmp_path / "x", {"peft_type": peft_type})
    with pytest.raises(UnknownMethodError) as info:
        PeftConfig.from_pretrained(tmp_path / "x")
    assert f"pip install {dist}" in str(info.value) and "LORA" in str(info.value)
    with pytest.raises(UnknownMethodError, match="no installed plugin provides method 'NOT_A_METHOD'"):
        PeftConfig.from_dict({"peft_type": "NOT_A_METHOD"})


def test_method_class_reading_another_methods_config_does_not_relabel_it(tmp_path, without_ia3):
    # like PEFT, LoraConfig.from_pretrained dispatches on peft_type instead of silently
    # turning another method's adapter into a LoRA config
    missing = [t for t in _PLUGINS if t not in registry()]
    _write(tmp_path / "x", {"peft_type": missing[0], "target_modules": ["q"]})
    with pytest.raises(UnknownMethodError):
        LoraConfig.from_pretrained(tmp_path / "x")


# -- tolerant loading -----------------------------------------------------------------------


def test_unknown_keys_dropped_with_one_warning(tmp_path):
    _write(tmp_path, _lora_dict(future_knob=3, another_new_field={"a": 1}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = PeftConfig.from_pretrained(tmp_path)
    relevant = [w for w in caught if "future_knob" in str(w.message) or "another_new_field" in str(w.message)]
    assert len(relevant) == 1
    message = str(relevant[0].message)
    assert "future_knob" in message and "another_new_field" in message and str(tmp_path) in message
    assert type(config) is LoraConfig and config.target_modules == {"q_proj"}
    assert not hasattr(config, "future_knob")


def test_known_keys_give_no_warning(tmp_path):
    _write(tmp_path, _lora_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PeftConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "field, value",
    [
        ("r", "8"),
        ("r", True),  # JSON true is not an integer rank
        ("r", 2.5),
        ("lora_dropout", "0.1"),
        ("target_modules", 5),
        ("target_modules", [1, 2]),
        ("use_rslora", "yes"),
        ("bias", "some"),
        ("rank_pattern", ["q_proj", 2]),
        ("inference_mode", 1),
    ],
)
def test_wrong_types_name_field_and_file(tmp_path, field, value):
    _write(tmp_path, _lora_dict(**{field: value}))
    with pytest.raises(ConfigError) as info:
        PeftConfig.from_pretrained(tmp_path)
    message = str(info.value)
    assert f"'{field}'" in message
    assert str(tmp_path / CONFIG_NAME) in message


def test_invalid_value_from_file_names_the_file(tmp_path):
    _write(tmp_path, _lora_dict(r=0))
    with pytest.raises(ConfigError, match="r must be a positive integer") as info:
        PeftConfig.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_invalid_task_type():
    with pytest.raises(ConfigError, match="task_type 'CAUSAL' is not one of"):
        LoraConfig(task_type="CAUSAL")
    assert LoraConfig(task_type="TOKEN_CLS").task_type is TaskType.TOKEN_CLS


# -- lazy exports ---------------------------------------------------------------------------


def test_lora_config_exported_lazily():
    from peft_core import LoraConfig as Lazy
    from peft_core_lora import LoraConfig as Direct

    assert Lazy is Direct is peft_core.LoraConfig
    from peft_core import LoraModel

    assert LoraModel.__name__ == "LoraModel"


def test_uninstalled_plugin_name_says_what_to_install(without_ia3):
    names = [(n, d) for t, (d, ns) in _PLUGINS.items() if t not in registry() for n in ns]
    preferred = [x for x in names if x[0] == "IA3Config"] or names
    name, dist = preferred[0]
    with pytest.raises(PluginNotInstalledError) as info:
        getattr(peft_core, name)
    assert f"pip install {dist}" in str(info.value)
    assert isinstance(info.value, PeftCoreError) and isinstance(info.value, ImportError)
    with pytest.raises(ImportError, match=f"pip install {dist}"):
        exec(f"from peft_core import {name}", {})
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        peft_core.NoSuchThing  # noqa: B018


# -- LoraConfig validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r": 0}, "r must be a positive integer"),
        ({"r": -2}, "r must be a positive integer"),
        ({"r": 2.0}, "r must be a positive integer"),
        ({"lora_alpha": "16"}, "lora_alpha must be a number"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
        ({"lora_dropout": -0.1}, r"lora_dropout must be in \[0, 1\)"),
        ({"bias": "some"}, "bias must be 'none', 'all' or 'lora_only'"),
        ({"target_modules": ["q"], "layers_pattern": "layers"}, "layers_pattern is only used together with layers_to_transform"),
        ({"target_modules": ".*q", "layers_to_transform": [0]}, "layers_to_transform only works with a list"),
        ({"target_modules": ".*q", "layers_pattern": "layers", "layers_to_transform": [0]}, "only works with a list"),
        ({"rank_pattern": {"q": 0}}, r"rank_pattern\['q'\] must be a positive integer"),
        ({"rank_pattern": ["q"]}, "rank_pattern must be a dict"),
    ],
)
def test_lora_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LoraConfig(**kwargs)


def test_lora_config_list_targets_become_sets():
    config = LoraConfig(target_modules=["a", "b", "a"], exclude_modules=("c",))
    assert config.target_modules == {"a", "b"} and config.exclude_modules == {"c"}
    assert LoraConfig(target_modules="all-linear").target_modules == "all-linear"


@pytest.fixture
def without_dora(monkeypatch):
    """Plugins as installed, but with any DoRA plugin blocked, so the hint path is exercised."""
    monkeypatch.setenv("PEFT_CORE_DISABLE_PLUGINS", "dora,peft-core-dora")
    reload_plugins()
    yield
    monkeypatch.undo()
    reload_plugins()


def test_use_dora_without_the_dora_plugin_says_what_to_install(without_dora):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="use_dora=True needs the peft-core-dora plugin: pip install peft-core-dora"):
        get_peft_model(model, LoraConfig(target_modules=["0"], use_dora=True))
    # nothing was injected
    assert [type(m) for m in model] == [nn.Linear, nn.Linear]
    assert all(v.equal(before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # a value no plugin serves ("pissa" is served once peft-core-lora-inits is installed)
        ({"init_lora_weights": "not_an_init"}, "init_lora_weights='not_an_init' is not available"),
        ({"layer_replication": [[0, 1]]}, "layer_replication"),
        # refused by LoRA without peft-core-lora-inits, by that plugin without init_lora_weights="loftq"
        ({"loftq_config": {"loftq_bits": 4}}, "loftq_config is (not supported|set but init_lora_weights=True)"),
    ],
)
def test_unsupported_lora_extensions_rejected_when_building(kwargs, message):
    config = LoraConfig(target_modules=["0"], **kwargs)  # parses, so a PEFT config never fails to load
    with pytest.raises(ConfigError, match=message):
        get_peft_model(nn.Sequential(nn.Linear(4, 4)), config)
