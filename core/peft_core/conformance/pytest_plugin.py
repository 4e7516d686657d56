"""pytest plugin (entry point ``pytest11: peft_core_conformance``): conformance checks as test items.

Inert unless asked: without ``--peft-core-conformance`` it only registers its options and
the ``peft_core_conformance`` marker. It is loaded in every pytest run of an environment
where peft-core is installed, so it imports nothing heavy at module level.

* ``--peft-core-conformance=METHOD`` (repeatable, ``all`` for every installed method) adds
  one test item per applicable check of each method;
* ``--peft-core-max-examples=N`` forces the number of Hypothesis examples per check, for
  these items and for tests made with ``parametrize_with_checks``;
* ``--peft-core-xfail=[METHOD::]CHECK`` (repeatable) marks a check as an expected failure
  (strict), without editing the test file.

When the same (method, check) is collected twice — a method's own
``parametrize_with_checks`` test and the generic all-methods test — the generic one is
deselected, so a session runs each check once, with the method's declared expectations.
"""

from __future__ import annotations

from typing import Any

import pytest

MARKER = "peft_core_conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("peft-core", "peft-core conformance suite")
    group.addoption("--peft-core-conformance", action="append", default=[], metavar="METHOD",
                    help="run the conformance suite for METHOD (repeatable; 'all' for every installed method)")
    group.addoption("--peft-core-max-examples", type=int, default=None, metavar="N",
                    help="Hypothesis examples per conformance check (default: the active profile's)")
    group.addoption("--peft-core-xfail", action="append", default=[], metavar="[METHOD::]CHECK",
                    help="mark a conformance check as an expected failure (repeatable)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(method, check, generic): a peft-core conformance check")
    n = config.getoption("--peft-core-max-examples")
    if n is not None:
        from .runner import MAX_EXAMPLES_OVERRIDE

        MAX_EXAMPLES_OVERRIDE[0] = n


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.getoption("--peft-core-max-examples") is not None:
        from .runner import MAX_EXAMPLES_OVERRIDE

        MAX_EXAMPLES_OVERRIDE[0] = None


class ConformanceItem(pytest.Item):
    """One check of one method, added by ``--peft-core-conformance``."""

    def __init__(self, *, method: str, check: str, error: Exception | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.method, self.check, self.error = method, check, error
        self.add_marker(getattr(pytest.mark, MARKER)(method=method, check=check, generic=True))

    def runtest(self) -> None:
        if self.error is not None:
            raise self.error
        from .runner import run_check

        run_check(self.method, self.check)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"conformance {self.method}::{self.check}"


def _requested_items(session: pytest.Session, methods: list[str]) -> list[pytest.Item]:
    from ..plugins import registry
    from .cases import ConformanceError, cases_for
    from .runner import check_names

    wanted = [spec.name for spec in registry()] if any(m.lower() == "all" for m in methods) else methods
    items: list[pytest.Item] = []
    for method in dict.fromkeys(wanted):
        spec = registry().get(method)
        try:
            cases_for(spec.name)
        except ConformanceError as exc:
            items.append(ConformanceItem.from_parent(session, name=f"conformance[{spec.name}-cases]",
                                                     method=spec.name, check="cases", error=exc))
            continue
        for check in check_names(spec.name):
            items.append(ConformanceItem.from_parent(session, name=f"conformance[{spec.name}-{check}]",
                                                     method=spec.name, check=check))
    return items


def _xfails(config: pytest.Config) -> list[tuple[str | None, str]]:
    out = []
    for entry in config.getoption("--peft-core-xfail"):
        method, sep, check = entry.rpartition("::")
        out.append((method.upper() if sep else None, check))
    return out


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    methods = config.getoption("--peft-core-conformance")
    if methods:
        items.extend(_requested_items(session, methods))
    marked = [(item, item.get_closest_marker(MARKER)) for item in items]
    marked = [(item, m) for item, m in marked if m is not None]
    if not marked:
        return
    own = {(m.kwargs["method"], m.kwargs["check"]) for _, m in marked if not m.kwargs.get("generic")}
    seen: set[tuple[str, str]] = set()
    deselected = []
    for item, m in marked:
        key = (m.kwargs["method"], m.kwargs["check"])
        if (m.kwargs.get("generic") and key in own) or (m.kwargs.get("generic") and key in seen):
            deselected.append(item)
        seen.add(key)
    if deselected:
        drop = {id(i) for i in deselected}
        items[:] = [i for i in items if id(i) not in drop]
        config.hook.pytest_deselected(items=deselected)
    xfails = _xfails(config)
    for item, m in marked:
        if id(item) in {id(i) for i in deselected}:
            continue
        for method, check in xfails:
            if check == m.kwargs["check"] and method in (None, m.kwargs["method"]):
                item.add_marker(pytest.mark.xfail(reason="declared with --peft-core-xfail", strict=True))
