"""Item 6: a plugin that raises inside a hook is named (with its distribution) in the error.

The fake plugin is served through a stand-in for ``importlib.metadata.entry_points``, so it
is discovered and registered exactly like an installed distribution, in-process.
"""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from torch import nn

from peft_core import LoraConfig, PeftConfig, get_peft_model, hookimpl
from peft_core import plugins
from peft_core.cli import main as cli_main
from peft_core.errors import ConfigError, PeftCoreError, PluginError
from reliability_support import lora_config

DIST = "fake-boom-dist"


def _boom_module() -> types.ModuleType:
    mod = types.ModuleType("fake_boom_plugin")
    mod.mode = set()

    @hookimpl
    def peft_core_validate_config(config, model):
        if "validate" in mod.mode:
            raise ZeroDivisionError("validate exploded")
        if "deliberate" in mod.mode:
            raise ConfigError("a deliberate, well-formed refusal")
        return None

    @hookimpl(tryfirst=True)
    def peft_core_describe_layer(module):
        if "describe" in mod.mode and isinstance(module, nn.Linear):
            raise KeyError("describe exploded")
        return None

    @hookimpl
    def peft_core_upgrade_config(config_dict):
        if "upgrade" in mod.mode:
            raise TypeError("upgrade exploded")

    mod.peft_core_validate_config = peft_core_validate_config
    mod.peft_core_describe_layer = peft_core_describe_layer
    mod.peft_core_upgrade_config = peft_core_upgrade_config
    return mod


class _EntryPoint:
    def __init__(self, name, dist, loader):
        self.name, self._loader = name, loader
        self.dist = types.SimpleNamespace(name=dist, version="9.9.9")

    def load(self):
        return self._loader()


def _broken_import():
    raise ImportError("needs libfoo.so, which is not installed")


@pytest.fixture
def boom(monkeypatch):
    mod = _boom_module()
    real = plugins.metadata.entry_points

    def entry_points(group):
        found = list(real(group=group))
        return found + [_EntryPoint("boom", DIST, lambda: mod), _EntryPoint("noimport", "fake-noimport", _broken_import)]

    monkeypatch.setattr(plugins, "metadata", types.SimpleNamespace(entry_points=entry_points))
    # the deliberately broken "noimport" plugin must be reported and skipped, not re-raised
    monkeypatch.delenv("PEFT_CORE_STRICT_PLUGINS", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plugins.reload_plugins()
    yield mod
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plugins.reload_plugins()


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize(("mode", "hook", "original"), [
    ("validate", "peft_core_validate_config", ZeroDivisionError),
    ("describe", "peft_core_describe_layer", KeyError),
])
def test_hook_that_raises_is_reported_with_its_distribution(boom, mode, hook, original):
    assert any(p.name == "boom" and p.distribution == DIST and not p.error for p in plugins.plugin_infos())
    boom.mode = {mode}
    model = _mlp()
    with pytest.raises(PluginError) as info:
        get_peft_model(model, LoraConfig(r=2, target_modules=["0"]))
    message = str(info.value)
    assert DIST in message and "'boom'" in message and hook in message and "exploded" in message
    assert isinstance(info.value.__cause__, original)
    # the model is left without adapter layers, and everything works once the plugin behaves
    assert [type(m) for m in model.modules()] == [nn.Sequential, nn.Linear, nn.ReLU, nn.Linear]
    boom.mode = set()
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    assert peft_model(torch.randn(3, 6)).shape == (3, 2)


def test_upgrade_hook_raising_while_reading_a_config(boom, tmp_path):
    lora_config().save_pretrained(tmp_path)
    boom.mode = {"upgrade"}
    with pytest.raises(PluginError, match=DIST) as info:
        PeftConfig.from_pretrained(tmp_path)
    assert "peft_core_upgrade_config" in str(info.value)
    assert isinstance(info.value, PeftCoreError)


def test_deliberate_peft_core_errors_pass_through_unwrapped(boom):
    boom.mode = {"deliberate"}
    with pytest.raises(ConfigError, match="deliberate") as info:
        get_peft_model(_mlp(), LoraConfig(r=2, target_modules=["0"]))
    assert not isinstance(info.value, PluginError)


def test_broken_import_is_listed_and_others_keep_working(boom, capsys):
    failed = {p.name: p for p in plugins.plugin_failures()}
    assert failed["noimport"].distribution == "fake-noimport" and "libfoo" in failed["noimport"].error
    assert "LORA" in plugins.registry()
    assert cli_main(["methods"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("noimport"))
    assert "fake-noimport" in row and "libfoo" in row
    assert any(line.startswith("LORA") for line in out.splitlines())


def test_in_process_plugin_hook_errors_are_named_too():
    mod = _boom_module()
    mod.mode = {"describe"}
    plugins.register_plugin(mod, name="inproc-boom")
    try:
        with pytest.raises(PluginError, match="inproc-boom"):
            get_peft_model(_mlp(), LoraConfig(r=2, target_modules=["0"]))
    finally:
        plugins.unregister_plugin("inproc-boom")
    assert get_peft_model(_mlp(), LoraConfig(r=2, target_modules=["0"]))(torch.randn(1, 6)).shape == (1, 2)
