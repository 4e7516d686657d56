"""The plugin system with real entry points: broken, duplicate and misspelled plugins.

Each fake plugin is a throwaway distribution written into ``tmp_path`` (a ``*.dist-info``
directory with ``METADATA`` and ``entry_points.txt`` for the ``peft_core`` group, plus its
module). The checks run in a subprocess with that directory on ``PYTHONPATH``, so
``importlib.metadata`` discovers the plugins exactly as it would installed packages. One
subprocess runs several scenarios (``reload_plugins`` re-reads the environment), which keeps
the number of interpreter start-ups — the slow part — at two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch
from torch import nn

from peft_core import LoraConfig, MethodSpec, PeftConfig, get_peft_model, hookimpl
from peft_core.errors import DuplicateMethodError, PluginError, UnknownMethodError
from peft_core.plugins import plugin_infos, register_plugin, registry, unregister_plugin

REPO = Path(__file__).resolve().parents[1]

TOY_MODULE = """
from dataclasses import dataclass
from typing import Optional
from peft_core import MethodSpec, PeftConfig, hookimpl

@dataclass
class ToyConfig(PeftConfig):
    peft_type: Optional[str] = "TOY"

@hookimpl
def peft_core_register_methods(registry):
    registry.register(MethodSpec(name="TOY", config_class=ToyConfig, prefix="toy_"))
"""

BROKEN_MODULE = """
raise RuntimeError("this plugin is broken on purpose")
"""

DUP_MODULE = """
from dataclasses import dataclass
from typing import Optional
from peft_core import MethodSpec, PeftConfig, hookimpl

@dataclass
class OtherLoraConfig(PeftConfig):
    peft_type: Optional[str] = "LORA"

@hookimpl
def peft_core_register_methods(registry):
    registry.register(MethodSpec(name="LORA", config_class=OtherLoraConfig, prefix="duplora_"))
"""

OVERLAP_MODULE = """
from dataclasses import dataclass
from typing import Optional
from peft_core import MethodSpec, PeftConfig, hookimpl

@dataclass
class LoraXConfig(PeftConfig):
    peft_type: Optional[str] = "LORAX"

@hookimpl
def peft_core_register_methods(registry):
    registry.register(MethodSpec(name="LORAX", config_class=LoraXConfig, prefix="lora_x"))
"""

MISSPELLED_MODULE = """
from peft_core import hookimpl

@hookimpl
def peft_core_register_method(registry):   # missing "s": no such hook
    raise AssertionError("never called")
"""

# entry-point name, distribution name, module name, module source
FAKE_PLUGINS = [
    ("broken", "fake-broken", "fake_broken_plugin", BROKEN_MODULE),
    ("toy", "fake-toy", "fake_toy_plugin", TOY_MODULE),
    ("zdup", "fake-dup", "fake_dup_plugin", DUP_MODULE),  # sorts after "lora", so LoRA keeps LORA
    ("zoverlap", "fake-overlap", "fake_overlap_plugin", OVERLAP_MODULE),
    ("misspelled", "fake-misspelled", "fake_misspelled_plugin", MISSPELLED_MODULE),
]

SCENARIO_RUNNER = r'''
import json, os, sys, warnings
import torch

KEYS = ("PEFT_CORE_PLUGINS", "PEFT_CORE_DISABLE_PLUGINS", "PEFT_CORE_STRICT_PLUGINS")

def snapshot(caught):
    from peft_core import plugins
    return {
        "methods": sorted(s.name for s in plugins.registry()),
        "owners": {s.name: [s.plugin_name, s.distribution] for s in plugins.registry()},
        "loaded": sorted(p.name for p in plugins.plugin_infos() if not p.error),
        "failures": {p.name: [p.distribution, p.error] for p in plugins.plugin_failures()},
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    }

def lora_works():
    from peft_core import LoraConfig, get_peft_model
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    x = torch.randn(3, 6)
    before = model(x)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    after = peft_model(x)
    trainable = sorted(n for n, p in peft_model.named_parameters() if p.requires_grad)
    return {"changed": bool((after - before).abs().max() > 1e-6), "trainable": trainable}

results = {}
for i, (label, env) in enumerate(json.loads(sys.argv[1])):
    for key in KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if i == 0:
                # the natural path: plugins load on first use, inside get_peft_model
                out = {"lora": lora_works()}
            else:
                from peft_core.plugins import reload_plugins
                reload_plugins()
                out = {}
            out.update(snapshot(caught))
        except Exception as exc:
            out = {"raised": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
    results[label] = out
print("RESULTS:" + json.dumps(results))
'''


def _write_dist(root: Path, ep_name: str, dist: str, module: str, source: str) -> None:
    info = root / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[peft_core]\n{ep_name} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fake_site")
    for ep_name, dist, module, source in FAKE_PLUGINS:
        _write_dist(root, ep_name, dist, module, source)
    return root


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFT_CORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module")
def scenarios(fake_site, tmp_path_factory) -> dict:
    """Run every scenario in one subprocess; ``{label: result}``."""
    runner = tmp_path_factory.mktemp("runner") / "runner.py"
    runner.write_text(SCENARIO_RUNNER)
    plan = [
        ("default", {}),
        ("strict_broken", {"PEFT_CORE_STRICT_PLUGINS": "1"}),
        ("strict_dup", {"PEFT_CORE_STRICT_PLUGINS": "1", "PEFT_CORE_PLUGINS": "lora,zdup"}),
        ("strict_misspelled", {"PEFT_CORE_STRICT_PLUGINS": "true", "PEFT_CORE_PLUGINS": "lora, misspelled"}),
        ("allow", {"PEFT_CORE_PLUGINS": "lora,fake-toy"}),  # an entry-point name and a distribution name
        ("allow_without_lora", {"PEFT_CORE_PLUGINS": "toy"}),
        ("block", {"PEFT_CORE_DISABLE_PLUGINS": "fake-broken,zdup,zoverlap,fake-misspelled"}),
        ("strict_block", {"PEFT_CORE_STRICT_PLUGINS": "1",
                          "PEFT_CORE_DISABLE_PLUGINS": "broken,fake-dup,fake-overlap,misspelled"}),
    ]
    proc = subprocess.run([sys.executable, str(runner), json.dumps(plan)], env=_env(fake_site),
                          capture_output=True, text=True, timeout=240, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULTS:"))
    return json.loads(line.removeprefix("RESULTS:"))


def test_broken_plugin_is_reported_and_skipped_and_lora_still_works(scenarios):
    res = scenarios["default"]
    assert "raised" not in res, res
    # LoRA works in the same process where a broken plugin failed to import
    assert res["lora"]["changed"]
    assert res["lora"]["trainable"] == ["base_model.model.0.lora_A.default.weight", "base_model.model.0.lora_B.default.weight"]
    dist, error = res["failures"]["broken"]
    assert dist == "fake-broken"
    assert "RuntimeError" in error and "broken on purpose" in error
    warning = next(w for w in res["warnings"] if "'broken'" in w)
    assert "fake-broken" in warning and "skipped" in warning
    # the good plugins loaded alongside
    assert {"LORA", "TOY"} <= set(res["methods"])
    assert {"lora", "toy"} <= set(res["loaded"])
    assert res["owners"]["LORA"] == ["lora", "peft-core-lora"]
    assert res["owners"]["TOY"] == ["toy", "fake-toy"]


def test_strict_mode_reraises_the_first_failure(scenarios):
    res = scenarios["strict_broken"]
    assert res["raised"] == "PluginError"
    assert "PeftCoreError" in res["mro"]
    assert "'broken'" in res["message"] and "fake-broken" in res["message"]
    assert "broken on purpose" in res["message"] and "PEFT_CORE_STRICT_PLUGINS" in res["message"]


def test_allow_list_by_entry_point_or_distribution_name(scenarios):
    res = scenarios["allow"]
    assert res["methods"] == ["LORA", "TOY"]
    assert res["failures"] == {}
    assert set(res["loaded"]) == {"peft_core._builtin", "lora", "toy"}
    # an allow-list without lora leaves LoRA out: the built-ins still load
    res = scenarios["allow_without_lora"]
    assert res["methods"] == ["TOY"]
    assert set(res["loaded"]) == {"peft_core._builtin", "toy"}


def test_block_list(scenarios):
    for label in ("block", "strict_block"):
        res = scenarios[label]
        assert "raised" not in res, res
        fakes = {ep for ep, *_ in FAKE_PLUGINS}
        assert not set(res["failures"]) & fakes
        assert {"LORA", "TOY"} <= set(res["methods"]) and "LORAX" not in res["methods"]
        assert set(res["loaded"]) & fakes == {"toy"}


def test_duplicate_method_name_names_both_plugins(scenarios):
    dist, error = scenarios["default"]["failures"]["zdup"]
    assert dist == "fake-dup"
    assert "DuplicateMethodError" in error
    for who in ("'lora'", "peft-core-lora", "'zdup'", "fake-dup", "'LORA'"):
        assert who in error
    # LoRA itself is unaffected
    assert scenarios["default"]["owners"]["LORA"] == ["lora", "peft-core-lora"]
    res = scenarios["strict_dup"]
    assert res["raised"] == "PluginError"
    assert "'lora'" in res["message"] and "'zdup'" in res["message"]


def test_overlapping_prefix_names_both_plugins(scenarios):
    dist, error = scenarios["default"]["failures"]["zoverlap"]
    assert dist == "fake-overlap"
    assert "DuplicateMethodError" in error
    for who in ("'lora_x'", "'lora_'", "'zoverlap'", "'lora'", "LORAX", "LORA"):
        assert who in error
    assert "LORAX" not in scenarios["default"]["methods"]


def test_misspelled_hook_fails_loudly(scenarios):
    dist, error = scenarios["default"]["failures"]["misspelled"]
    assert dist == "fake-misspelled"
    assert "peft_core_register_method" in error and "misspelled" in error
    assert "misspelled" not in scenarios["default"]["loaded"]
    res = scenarios["strict_misspelled"]
    assert res["raised"] == "PluginError"
    assert "peft_core_register_method" in res["message"] and "fake-misspelled" in res["message"]


def test_cli_methods_lists_methods_and_broken_plugins(fake_site):
    exe = Path(sys.executable).with_name("peft-core")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "peft_core.cli"]
    proc = subprocess.run([*cmd, "methods", "-v"], env=_env(fake_site), capture_output=True, text=True,
                          timeout=240, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    header = out.splitlines()[0].split()
    assert header == ["method", "config", "distribution", "version", "capabilities"]
    lora_row = next(line for line in out.splitlines() if line.startswith("LORA "))
    assert "LoraConfig" in lora_row and "peft-core-lora" in lora_row and "merge" in lora_row
    assert any(line.startswith("TOY ") and "fake-toy" in line and "0.0.1" in line for line in out.splitlines())
    failed = out.split("plugins that failed to load")[1]
    for name, dist in (("broken", "fake-broken"), ("zdup", "fake-dup"), ("misspelled", "fake-misspelled")):
        row = next(line for line in failed.splitlines() if line.startswith(name + " "))
        assert dist in row
    assert "broken on purpose" in failed


# -- in-process plugins ----------------------------------------------------------------------


def _toy_plugin(name: str = "INPROC", prefix: str = "inproc_"):
    @dataclass
    class InprocConfig(PeftConfig):
        peft_type: Optional[str] = name

    plugin = types.SimpleNamespace()

    @hookimpl
    def peft_core_register_methods(registry):
        registry.register(MethodSpec(name=name, config_class=InprocConfig, prefix=prefix))

    plugin.peft_core_register_methods = peft_core_register_methods
    return plugin, InprocConfig


def test_register_and_unregister_plugin_in_process():
    plugin, config_class = _toy_plugin()
    register_plugin(plugin, name="inproc-test")
    try:
        spec = registry().get("inproc")  # names are case-insensitive
        assert spec.config_class is config_class and spec.plugin_name == "inproc-test"
        assert any(p.name == "inproc-test" and not p.error for p in plugin_infos())
        # config dispatch goes through the registry
        assert type(PeftConfig.from_dict({"peft_type": "INPROC"})) is config_class
    finally:
        unregister_plugin("inproc-test")
    assert "INPROC" not in registry()
    assert not any(p.name == "inproc-test" for p in plugin_infos())
    with pytest.raises(UnknownMethodError, match="INPROC"):
        PeftConfig.from_dict({"peft_type": "INPROC"})
    # LoRA is untouched by the round trip
    model = nn.Sequential(nn.Linear(4, 4))
    get_peft_model(model, LoraConfig(r=2, target_modules=["0"]))


def test_register_plugin_under_a_taken_name_is_a_plugin_error():
    plugin, _ = _toy_plugin(name="TAKEN", prefix="taken_")
    with pytest.raises(PluginError, match="'lora'.*already registered"):
        register_plugin(plugin, name="lora")
    assert "TAKEN" not in registry()
    register_plugin(plugin, name="taken-inproc")
    try:
        with pytest.raises(PluginError, match="already registered"):
            register_plugin(plugin, name="taken-again")
    finally:
        unregister_plugin("taken-inproc")
    assert "TAKEN" not in registry()


def test_register_plugin_duplicate_method_leaves_registry_unchanged():
    before = {s.name: s for s in registry()}
    plugin, _ = _toy_plugin(name="LORA", prefix="otherlora_")
    with pytest.raises(DuplicateMethodError, match="'dup-inproc'") as info:
        register_plugin(plugin, name="dup-inproc")
    assert "'lora'" in str(info.value)
    assert {s.name: s for s in registry()} == before
    assert not any(p.name == "dup-inproc" for p in plugin_infos())
    plugin, _ = _toy_plugin(name="LORA2", prefix="lora_2")
    with pytest.raises(DuplicateMethodError, match="overlaps prefix 'lora_'"):
        register_plugin(plugin, name="overlap-inproc")
    assert {s.name: s for s in registry()} == before


def test_register_plugin_with_misspelled_hook_raises():
    plugin = types.SimpleNamespace()

    @hookimpl
    def peft_core_validate_configs(config, model):  # no such hook
        return None

    plugin.peft_core_validate_configs = peft_core_validate_configs
    with pytest.raises(PluginError, match="peft_core_validate_configs"):
        register_plugin(plugin, name="typo-inproc")
    from peft_core.plugins import plugin_manager

    assert plugin_manager().get_plugin("typo-inproc") is None
    assert not any(p.name == "typo-inproc" for p in plugin_infos())
    # the model still works with the hooks that remain
    model = nn.Sequential(nn.Linear(4, 4))
    out = get_peft_model(model, LoraConfig(r=2, target_modules=["0"]))(torch.ones(1, 4))
    assert out.shape == (1, 4)


def test_a_plugin_without_a_method_exports_names_through_the_registry():
    import peft_core

    def helper_fn():
        return "exported"

    plugin = types.SimpleNamespace()

    @hookimpl
    def peft_core_register_methods(registry):
        registry.add_exports({"InprocHelperFn": helper_fn})

    plugin.peft_core_register_methods = peft_core_register_methods
    register_plugin(plugin, name="exports-inproc")
    try:
        assert peft_core.InprocHelperFn is helper_fn
        clash = types.SimpleNamespace(peft_core_register_methods=hookimpl(
            lambda registry: registry.add_exports({"InprocHelperFn": object()})))
        with pytest.raises(DuplicateMethodError, match="'exports-inproc'.*'clash-inproc'"):
            register_plugin(clash, name="clash-inproc")
        assert peft_core.InprocHelperFn is helper_fn  # the failed plugin changed nothing
    finally:
        unregister_plugin("exports-inproc")
    with pytest.raises(AttributeError, match="InprocHelperFn"):
        peft_core.InprocHelperFn
