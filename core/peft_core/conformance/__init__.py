"""The shared conformance suite: checks every method plugin must pass.

A method package's whole conformance test::

    from peft_core.conformance import parametrize_with_checks

    @parametrize_with_checks("MYMETHOD")
    def test_conformance(check):
        check()

and its plugin answers the ``peft_core_conformance_cases`` hook with a :class:`MethodCases`.
``peft-core conformance MYMETHOD`` runs the same checks and prints a table.

Names are resolved lazily: this package is imported by the ``peft-core`` command (and by
method plugins registering their hook), which must work without pytest or Hypothesis
installed; only running checks needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MethodCases": "cases",
    "Case": "cases",
    "ConformanceError": "cases",
    "cases_for": "cases",
    "CHECKS": "checks",
    "Check": "checks",
    "CheckResult": "runner",
    "Outcome": "runner",
    "check_names": "runner",
    "parametrize_with_checks": "runner",
    "parametrize_all_methods": "runner",
    "run_check": "runner",
    "run_suite": "runner",
    "MODEL_KINDS": "strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        if module in ("checks", "strategies", "runner"):
            _require_hypothesis()
        return getattr(import_module(f"{__name__}.{module}"), name)
    if name.startswith("check_"):
        _require_hypothesis()
        checks = import_module(f"{__name__}.checks")
        if hasattr(checks, name):
            return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _require_hypothesis() -> None:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        from ..errors import PluginNotInstalledError

        raise PluginNotInstalledError(
            "the conformance suite needs Hypothesis: pip install hypothesis (or peft-core[test])."
        ) from None
