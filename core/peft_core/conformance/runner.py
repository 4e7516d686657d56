"""Running checks: one check over many Hypothesis cases, a method's whole suite, pytest parametrization.

Hypothesis settings come from the active profile (``ci``: few examples, ``dev``: many)
with three overrides that make sense only here: no deadline (building a model is slow and
uneven), no example database (runs happen in other people's repositories), and no
shrinking unless asked (every shrink step rebuilds models; the first failure is already a
small case). ``max_examples`` can be forced per call, by the pytest option
``--peft-core-max-examples`` or by ``peft-core conformance --max-examples``.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cases import ConformanceError, cases_for

#: set by the pytest plugin / CLI; ``None`` means "what the Hypothesis profile says"
MAX_EXAMPLES_OVERRIDE: list[int | None] = [None]


def register_profiles() -> None:
    """The ``ci`` and ``dev`` profiles the repository's conftest uses, for runs outside pytest."""
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=8, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=100, deadline=None)


def conformance_settings(max_examples: int | None = None) -> Any:
    from hypothesis import HealthCheck, Phase, settings

    current = settings()
    n = max_examples or MAX_EXAMPLES_OVERRIDE[0] or current.max_examples
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("PEFT_CORE_CONFORMANCE_SHRINK", "").lower() in {"1", "true", "yes"}:
        phases.append(Phase.shrink)
    return settings(
        current,
        max_examples=n,
        deadline=None,
        database=None,
        phases=phases,
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


def check_names(method: str | None = None) -> list[str]:
    """Names of all checks, or of those that apply to ``method``'s declared capabilities."""
    from .checks import CHECKS

    if method is None:
        return list(CHECKS)
    from ..plugins import registry

    spec = registry().get(method)
    return [name for name, chk in CHECKS.items() if chk.applies_to(spec)]


def run_check(method: str, check: str, max_examples: int | None = None) -> None:
    """Run one check of ``method`` on Hypothesis-drawn cases; raises on the first failing case.

    The examples are spread over the method's model kinds (at least one each): left to
    itself, a handful of examples would cover some kinds and never meet others.
    """
    from ..plugins import registry
    from .checks import CHECKS

    if check not in CHECKS:
        raise ConformanceError(f"no conformance check named {check!r}; known: {', '.join(CHECKS)}.")
    spec = registry().get(method)
    method_cases = cases_for(spec.name)
    func = CHECKS[check]
    total = conformance_settings(max_examples).max_examples
    kinds = method_cases.model_kinds
    with _one_thread():
        for kind in kinds:
            _run_on(kind, spec, method_cases, func, check, math.ceil(total / len(kinds)))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on shared CI cores they spin and lose."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_on(kind: str, spec: Any, method_cases: Any, func: Any, check: str, n: int) -> None:
    from hypothesis import given

    from .strategies import case_strategy

    @conformance_settings(max(1, n))
    @given(case=case_strategy(spec, method_cases, (kind,)))
    def run(case: Any) -> None:
        func(case)

    run.__name__ = run.__qualname__ = f"{check}[{spec.name}-{kind}]"
    run()


class Outcome(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_APPLICABLE = "not applicable"
    EXPECTED_FAILURE = "expected failure"
    UNEXPECTED_PASS = "unexpected pass"

    @property
    def bad(self) -> bool:
        return self in (Outcome.FAILED, Outcome.UNEXPECTED_PASS)


@dataclass(frozen=True)
class CheckResult:
    method: str
    check: str
    outcome: Outcome
    detail: str = ""
    seconds: float = 0.0


def _first_lines(exc: BaseException, limit: int = 400) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    notes = [n for n in getattr(exc, "__notes__", []) if n.startswith("Falsifying")]
    if notes:
        text += " | " + notes[0].replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_suite(
    method: str,
    expected_failures: Mapping[str, str] | Iterable[str] = (),
    checks: Sequence[str] | None = None,
    max_examples: int | None = None,
) -> list[CheckResult]:
    """Every check of ``method`` (or those in ``checks``), never raising for a failing check."""
    from ..plugins import registry
    from .checks import CHECKS

    spec = registry().get(method)
    expected = _expected(expected_failures)
    results = []
    try:
        cases_for(spec.name)
    except ConformanceError as exc:
        return [CheckResult(spec.name, "conformance cases", Outcome.FAILED, str(exc))]
    for name in checks or list(CHECKS):
        if name not in CHECKS:
            raise ConformanceError(f"no conformance check named {name!r}; known: {', '.join(CHECKS)}.")
        if not CHECKS[name].applies_to(spec):
            needs = ", ".join(sorted(c.value for c in CHECKS[name].requires)) or "an undeclared capability"
            results.append(CheckResult(spec.name, name, Outcome.NOT_APPLICABLE, f"needs {needs}"))
            continue
        start = time.perf_counter()
        try:
            run_check(spec.name, name, max_examples)
        except Exception as exc:
            outcome = Outcome.EXPECTED_FAILURE if name in expected else Outcome.FAILED
            detail = _first_lines(exc)
        else:
            outcome = Outcome.UNEXPECTED_PASS if name in expected else Outcome.PASSED
            detail = f"declared as expected failure ({expected[name]}) but passed" if name in expected else ""
        results.append(CheckResult(spec.name, name, outcome, detail, time.perf_counter() - start))
    return results


def _expected(expected_failures: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    from .checks import CHECKS

    if expected_failures is None:
        return {}
    if isinstance(expected_failures, Mapping):
        out = {str(k): str(v) for k, v in expected_failures.items()}
    else:
        out = {str(k): "declared expected failure" for k in expected_failures}
    unknown = sorted(set(out) - set(CHECKS))
    if unknown:
        raise ConformanceError(f"expected_failures names unknown checks {unknown}; known: {', '.join(CHECKS)}.")
    return out


class CheckCall:
    """What a parametrized test receives as ``check``: call it to run the check."""

    def __init__(self, method: str, check: str, max_examples: int | None = None, error: Exception | None = None):
        self.method, self.check, self.max_examples, self.error = method, check, max_examples, error

    def __call__(self) -> None:
        if self.error is not None:
            raise self.error
        run_check(self.method, self.check, self.max_examples)

    def __repr__(self) -> str:
        return f"<conformance {self.method}::{self.check}>"


def _params(method: str, expected: Mapping[str, str], checks: Sequence[str] | None, max_examples: int | None,
            generic: bool, id_prefix: str) -> list[Any]:
    import pytest

    from ..plugins import registry

    spec = registry().get(method)
    try:
        cases_for(spec.name)
    except ConformanceError as exc:
        mark = pytest.mark.peft_core_conformance(method=spec.name, check="cases", generic=generic)
        return [pytest.param(CheckCall(spec.name, "cases", error=exc), id=f"{id_prefix}cases", marks=mark)]
    params = []
    for name in checks or check_names(spec.name):
        if name not in check_names(spec.name):
            continue
        marks = [pytest.mark.peft_core_conformance(method=spec.name, check=name, generic=generic)]
        if name in expected:
            marks.append(pytest.mark.xfail(reason=expected[name], strict=True))
        params.append(pytest.param(CheckCall(spec.name, name, max_examples), id=f"{id_prefix}{name}", marks=marks))
    return params


def parametrize_with_checks(
    method: str,
    expected_failures: Mapping[str, str] | Iterable[str] | None = None,
    checks: Sequence[str] | None = None,
    max_examples: int | None = None,
) -> Any:
    """``@parametrize_with_checks("MYMETHOD")``: one test per applicable check, argument ``check``.

    Known bugs go in ``expected_failures`` (check name → reason); they are strict xfails,
    so a fixed bug makes the test fail until the entry is removed.
    """
    import pytest

    return pytest.mark.parametrize("check", _params(method, _expected(expected_failures), checks, max_examples,
                                                    generic=False, id_prefix=""))


def parametrize_all_methods(max_examples: int | None = None) -> Any:
    """Like :func:`parametrize_with_checks` for every installed method (ids ``METHOD-check``).

    These tests are *generic*: when a method's own test file also runs its checks in the
    same pytest session, the pytest plugin deselects the generic duplicates.
    """
    import pytest

    from ..plugins import registry

    params = [p for spec in registry() for p in _params(spec.name, {}, None, max_examples, True, f"{spec.name}-")]
    return pytest.mark.parametrize("check", params)
