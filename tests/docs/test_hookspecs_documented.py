"""Every hook specification — the core's and those plugins add — is documented and in the reference.

The hook reference page is generated from the plugin manager, so this also proves the
generator: a hook added to ``peft_core.hookspecs`` or to a plugin's own spec module shows up
without anyone editing the docs, and a hook without a docstring fails here.
"""

from __future__ import annotations

import inspect
import re
from importlib import import_module

from peft_core import hookspecs

MARKER = f"{hookspecs.PROJECT}_spec"  # the attribute pluggy's HookspecMarker sets


def _specs():
    """``{hook name: spec function}`` for every hookspec the plugin manager knows."""
    from peft_core.plugins import plugin_manager

    pm = plugin_manager()
    found = {}
    for name in dir(pm.hook):
        spec = getattr(getattr(pm.hook, name), "spec", None)
        if spec is not None:
            found[name] = spec.function
    return found


def test_plugin_manager_knows_core_and_plugin_hookspecs():
    specs = _specs()
    core = {name for name, obj in vars(hookspecs).items() if hasattr(obj, MARKER)}
    assert core and core <= set(specs), f"core hookspecs not registered: {core - set(specs)}"
    modules = {f.__module__ for f in specs.values()}
    assert "peft_core_lora.hookspecs" in modules, "the LoRA plugin's variant hooks are missing"
    # every spec module is complete: no marked function is left out of the manager
    for module_name in modules:
        module = import_module(module_name)
        marked = {name for name, obj in vars(module).items() if hasattr(obj, MARKER)}
        assert marked <= set(specs), f"{module_name}: {marked - set(specs)} not added to the plugin manager"


def test_every_hookspec_has_a_real_docstring():
    for name, func in _specs().items():
        doc = inspect.getdoc(func) or ""
        assert len(doc.split()) >= 8, f"{func.__module__}.{name} needs a docstring: arguments, return, when it is called"


def test_every_hookspec_appears_in_the_hook_reference(docs_build):
    page = docs_build.page("plugin-guide/hooks.md")
    ids = set(re.findall(r'id="([^"]+)"', page))
    for name, func in _specs().items():
        anchor = f"{func.__module__}.{name}"
        assert anchor in ids, f"{anchor} is not in the hook reference"
        # rendered with its docstring, not just a heading
        opening = " ".join(_plain(inspect.getdoc(func) or "").split()[:6])
        assert opening in _text(page), f"{anchor}: docstring not rendered ({opening!r})"


def _plain(doc: str) -> str:
    """A docstring as it reads once rendered: roles shown as their names, no backticks."""
    def role(m):
        target = m[1]
        return target.lstrip("~").rsplit(".", 1)[-1] if target.startswith("~") else target

    return re.sub(r":\w+:`([^`]+)`", role, doc).replace("`", "")


def _text(html: str) -> str:
    import html as html_lib

    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", html)).split())
