"""Loading plugins: the one place that decides which plugins run.

Built-in hook implementations are registered exactly like third-party plugins. Every
entry point in the ``peft_core`` group is loaded on its own inside ``try/except``: a
broken plugin is recorded (see :func:`plugin_failures`, ``peft-core methods``) and
skipped, and the rest keep working. Environment variables:

* ``PEFT_CORE_PLUGINS`` — comma-separated allow-list of entry-point or distribution names;
* ``PEFT_CORE_DISABLE_PLUGINS`` — comma-separated block-list;
* ``PEFT_CORE_STRICT_PLUGINS=1`` — re-raise the first plugin failure (for CI).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import MethodRegistry

ENTRY_POINT_GROUP = "peft_core"
BUILTIN_PLUGINS = ("peft_core._builtin",)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded or failed plugin, as ``peft-core methods`` shows it."""

    name: str
    distribution: str | None
    version: str | None
    error: str | None = None


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm: pluggy.PluginManager | None = None
        self.registry: MethodRegistry | None = None
        self.plugins: list[PluginInfo] = []


_state = _State()


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


def _strict() -> bool:
    return os.environ.get("PEFT_CORE_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes"}


def _fail(name: str, dist: str | None, version: str | None, exc: BaseException, what: str) -> PluginInfo:
    who = f"plugin {name!r}" + (f" from distribution {dist!r}" if dist else "")
    message = f"{who} failed to {what}: {type(exc).__name__}: {exc}"
    if _strict():
        raise PluginError(message + " (PEFT_CORE_STRICT_PLUGINS=1)") from exc
    warnings.warn(message + "; it was skipped.", RuntimeWarning, stacklevel=4)
    return PluginInfo(name, dist, version, error=f"{type(exc).__name__}: {exc}")


def _unverified_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook implementations of ``plugin`` that match no spec (misspelled hook names)."""
    bad = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not impl.optionalhook:
                bad.append(caller.name)
    return bad


def _guard_hooks(pm: pluggy.PluginManager, plugin: object, name: str, dist: str | None) -> None:
    """Make ``plugin``'s hook implementations report unexpected exceptions as :class:`PluginError`.

    The one place that gives a failure inside a hook call its culprit: deliberate
    errors (:class:`PeftCoreError`) pass through unchanged; anything else (a plugin bug) becomes a
    ``PluginError`` naming the hook, the plugin and its distribution, chained to the original.
    Wrapper-style implementations (generators) are left alone.
    """
    from .errors import PeftCoreError

    who = f"plugin {name!r}" + (f" from distribution {dist!r}" if dist else "")
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin or impl.hookwrapper or impl.wrapper:
                continue
            if getattr(impl.function, "_peft_core_guarded", False):
                continue

            def guarded(*args: Any, _fn: Any = impl.function, _hook: str = caller.name, **kwargs: Any) -> Any:
                try:
                    return _fn(*args, **kwargs)
                except PeftCoreError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"{who} raised in hook {_hook}: {type(exc).__name__}: {exc}. This is a bug in that "
                        "plugin; upgrade it, or disable it with PEFT_CORE_DISABLE_PLUGINS."
                    ) from exc

            guarded._peft_core_guarded = True  # type: ignore[attr-defined]
            impl.function = guarded


def _load() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    # historic: every plugin registered from now on gets the call as it is registered
    pm.hook.peft_core_addhooks.call_historic(kwargs={"plugin_manager": pm})
    plugins: list[PluginInfo] = []
    # (name, dist, version, module) of plugins that imported cleanly
    loaded: list[tuple[str, str | None, str | None, Any]] = []
    for modname in BUILTIN_PLUGINS:
        loaded.append((modname, "peft-core", None, import_module(modname)))

    allow, block = _env_list("PEFT_CORE_PLUGINS"), _env_list("PEFT_CORE_DISABLE_PLUGINS")
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        names = {ep.name, dist} - {None}
        if (allow is not None and not names & allow) or (block is not None and names & block):
            logger.debug("plugin %s skipped by PEFT_CORE_PLUGINS/PEFT_CORE_DISABLE_PLUGINS", ep.name)
            continue
        try:
            loaded.append((ep.name, dist, version, ep.load()))
        except Exception as exc:  # a broken plugin must not break the others
            plugins.append(_fail(ep.name, dist, version, exc, "import"))

    registered: list[tuple[str, str | None, str | None, Any]] = []
    for name, dist, version, module in loaded:
        try:
            pm.register(module, name=name)
            registered.append((name, dist, version, module))
        except Exception as exc:
            plugins.append(_fail(name, dist, version, exc, "register its hooks"))

    registry = MethodRegistry()
    for name, dist, version, module in registered:
        bad = _unverified_hooks(pm, module)
        error: BaseException | None = None
        if bad:
            error = PluginError(f"it implements hooks that no spec declares: {', '.join(sorted(bad))} (misspelled?)")
        elif hasattr(module, "peft_core_register_methods"):
            registry._current_plugin = (name, dist)
            before, exports_before = dict(registry._by_name), dict(registry._exports)
            try:
                module.peft_core_register_methods(registry=registry)
            except Exception as exc:
                # a half-registered plugin leaves nothing behind
                registry._by_name, registry._exports = before, exports_before
                error = exc
        if error is not None:
            pm.unregister(module)
            plugins.append(_fail(name, dist, version, error, "load"))
        else:
            _guard_hooks(pm, module, name, dist)
            plugins.append(PluginInfo(name, dist, version))
    registry._current_plugin = ("<unknown>", None)
    _state.pm, _state.registry, _state.plugins = pm, registry, plugins


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading plugins on first use."""
    if _state.pm is None:
        with _state.lock:
            if _state.pm is None:
                _load()
    assert _state.pm is not None
    return _state.pm


def hook() -> Any:
    """Shortcut for ``plugin_manager().hook``."""
    return plugin_manager().hook


def registry() -> MethodRegistry:
    """The registry of installed methods."""
    plugin_manager()
    assert _state.registry is not None
    return _state.registry


def plugin_infos() -> list[PluginInfo]:
    """Every plugin seen, loaded or failed, for reports such as ``peft-core methods``."""
    plugin_manager()
    return list(_state.plugins)


def plugin_failures() -> list[PluginInfo]:
    return [p for p in plugin_infos() if p.error]


def reload_plugins() -> None:
    """Forget loaded plugins and load them again (after changing the environment variables)."""
    with _state.lock:
        _state.pm = None
        _state.registry = None
        _state.plugins = []
    plugin_manager()


def register_plugin(module: object, name: str | None = None) -> None:
    """Register an in-process plugin object (tests, notebooks) and its methods."""
    pm = plugin_manager()
    reg = registry()
    name = name or getattr(module, "__name__", repr(module))
    if pm.get_plugin(name) is not None or pm.is_registered(module):
        raise PluginError(
            f"a plugin named {name!r} (or this plugin object) is already registered; "
            "call unregister_plugin(name) first or register it under another name."
        )
    pm.register(module, name=name)
    bad = _unverified_hooks(pm, module)
    if bad:
        pm.unregister(module)
        raise PluginError(f"plugin {name!r} implements hooks that no spec declares: {', '.join(sorted(bad))}")
    if hasattr(module, "peft_core_register_methods"):
        reg._current_plugin = (name, None)
        before, exports_before = dict(reg._by_name), dict(reg._exports)
        try:
            module.peft_core_register_methods(registry=reg)
        except Exception:
            reg._by_name, reg._exports = before, exports_before
            pm.unregister(module)
            raise
        finally:
            reg._current_plugin = ("<unknown>", None)
    _guard_hooks(pm, module, name, None)
    _state.plugins.append(PluginInfo(name, None, None))


def unregister_plugin(name: str) -> None:
    """Remove an in-process plugin and the methods it registered."""
    pm = plugin_manager()
    reg = registry()
    module = pm.unregister(name=name)
    if module is None:
        return
    reg._by_name = {k: v for k, v in reg._by_name.items() if v.plugin_name != name}
    reg._exports = {k: v for k, v in reg._exports.items() if v[1] != name}
    _state.plugins = [p for p in _state.plugins if p.name != name]
