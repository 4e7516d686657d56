"""The conformance suite catches what it claims to: broken toy methods fail exactly their checks.

Each toy (``conformance_toys.py``) is registered in-process and run through a generated
test file with ``pytester``, the way a method author runs the suite; the failing test ids
must be exactly the checks the toy's bug breaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import conformance_toys as toys
from peft_core.cli import main
from peft_core.conformance import ConformanceError, check_names, parametrize_with_checks

pytest_plugins = "pytester"


def _warm_up() -> None:
    """Load the plugins and what torch loads lazily on the first optimizer step, before any pytester run.

    ``inline_run`` restores ``sys.modules`` afterwards: a plugin module first imported inside
    one run would vanish from ``sys.modules`` (breaking ``typing.get_type_hints`` on its
    config class), and a torch extension would be registered with torch a second time.
    """
    import peft_core.conformance.checks  # noqa: F401
    import peft_core.conformance.runner  # noqa: F401
    from peft_core.plugins import registry

    import typing

    for spec in registry():  # resolve each config's annotations now (a default config may be invalid)
        typing.get_type_hints(spec.config_class)
    param = torch.nn.Parameter(torch.zeros(2))
    (param * 2).sum().backward()
    torch.optim.Adam([param]).step()


_warm_up()

HERE = Path(__file__).parent

TEST_FILE = """
import sys
sys.path.insert(0, {here!r})
import conformance_toys
from peft_core.conformance import parametrize_with_checks

NAME = conformance_toys.install({bug!r})


@parametrize_with_checks(NAME{extra})
def test_conformance(check):
    check()
"""


def _outcomes(reprec) -> tuple[set[str], set[str], set[str]]:
    passed, skipped, failed = reprec.listoutcomes()
    ids = lambda reports: {r.nodeid.split("[", 1)[1].rstrip("]") for r in reports}  # noqa: E731
    return ids(passed), ids(skipped), ids(failed)


@pytest.fixture
def toy_file(pytester):
    installed = []

    def make(bug, extra=""):
        installed.append(bug)
        pytester.makepyfile(test_toy=TEST_FILE.format(here=str(HERE), bug=bug, extra=extra))
        return pytester

    yield make
    for bug in installed:
        toys.uninstall(bug)


@pytest.mark.parametrize("bug", [None, "merge", "leak", "train", "disable"])
def test_broken_toy_fails_exactly_its_checks(toy_file, bug):
    reprec = toy_file(bug).inline_run("-p", "no:cacheprovider", "--peft-core-max-examples=2")
    passed, skipped, failed = _outcomes(reprec)
    expected = toys.EXPECTED_FAILURES[bug]
    assert failed == expected
    assert not skipped
    assert passed == set(check_names(toys.method_name(bug))) - expected
    assert len(passed) >= 15  # the toy really ran the suite, not a handful of checks


def test_undeclared_capabilities_are_not_applicable_and_must_raise(toy_file):
    reprec = toy_file("nomerge").inline_run("-p", "no:cacheprovider", "--peft-core-max-examples=2")
    passed, _, failed = _outcomes(reprec)
    assert not failed
    assert "check_undeclared_capabilities_raise" in passed
    assert not {"check_merge_unmerge_roundtrip", "check_merge_and_unload", "check_unload_returns_base"} & passed


def test_expected_failures_become_strict_xfails(toy_file):
    extra = ", expected_failures={'check_merge_unmerge_roundtrip': 'known', 'check_merge_and_unload': 'known', " \
            "'check_identity_at_init': 'wrongly declared'}"
    reprec = toy_file("merge", extra).inline_run("-p", "no:cacheprovider", "--peft-core-max-examples=2")
    passed, skipped, failed = _outcomes(reprec)
    assert failed == {"check_identity_at_init"}  # strict: an expected failure that passes is a failure
    assert {"check_merge_unmerge_roundtrip", "check_merge_and_unload"} == skipped  # xfailed reports as skipped


def test_pytest_option_runs_and_xfails_checks(pytester):
    toys.install("disable")
    try:
        applicable = check_names("TOYDISABLE")
        pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
        reprec = pytester.inline_run("-p", "no:cacheprovider", "--peft-core-conformance=TOYDISABLE",
                                     "--peft-core-max-examples=2",
                                     "--peft-core-xfail=TOYDISABLE::check_disable_adapter_gives_base_output")
    finally:
        toys.uninstall("disable")
    passed, skipped, failed = reprec.listoutcomes()
    assert not failed
    assert [r.nodeid.lstrip(":") for r in skipped] == ["conformance[TOYDISABLE-check_disable_adapter_gives_base_output]"]
    assert len(passed) == len(applicable)  # test_nothing + every check but the xfailed one


def test_plugin_is_inert_unless_asked(pytester):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    reprec = pytester.inline_run("-p", "no:cacheprovider")
    passed, skipped, failed = reprec.listoutcomes()
    assert [r.nodeid for r in passed] == ["test_nothing.py::test_nothing"]


def test_cli_table_and_exit_code(capsys):
    toys.install("merge")
    try:
        code = main(["conformance", "TOYMERGE", "--max-examples", "2"])
    finally:
        toys.uninstall("merge")
    out = capsys.readouterr().out
    assert code == 1
    rows = {line.split()[0]: line.split(None, 1)[1].strip() for line in out.splitlines()
            if line.startswith("check_") and "  " in line}
    assert rows["check_merge_unmerge_roundtrip"] == "failed"
    assert rows["check_merge_and_unload"] == "failed"
    assert rows["check_merge_twice_is_idempotent"] == "passed"
    assert "failures:" in out and "merged model's output differs" in out


def test_cli_declared_failures_pass_and_not_applicable_is_shown(capsys):
    toys.install("nomerge")
    try:
        code = main(["conformance", "TOYNOMERGE", "--max-examples", "1", "--check", "check_merge_and_unload",
                     "--check", "check_undeclared_capabilities_raise"])
    finally:
        toys.uninstall("nomerge")
    out = capsys.readouterr().out
    assert code == 0
    assert "not applicable" in out and "passed" in out


def test_cli_needs_a_method(capsys):
    assert main(["conformance"]) == 1
    assert "--all" in capsys.readouterr().err


def test_unknown_expected_failure_is_an_error():
    with pytest.raises(ConformanceError, match="unknown checks"):
        parametrize_with_checks("LORA", expected_failures={"check_does_not_exist": "typo"})
