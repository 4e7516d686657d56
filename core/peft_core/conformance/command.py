"""``peft-core conformance`` and ``peft-core new-method``: the suite and the plugin scaffold on the command line.

Registered through ``peft_core.cli.COMMAND_MODULES``; this module is imported every time
the CLI starts, so Hypothesis (a test-time dependency) is imported only inside the handler.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cli import command
from ..tables import format_table


def _conformance_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("methods", nargs="*", metavar="METHOD", help="methods (peft_type) to check")
    parser.add_argument("--all", action="store_true", help="check every installed method")
    parser.add_argument("--check", action="append", default=None, metavar="NAME", help="run only this check (repeatable)")
    parser.add_argument("--max-examples", type=int, default=None, metavar="N", help="Hypothesis examples per check")
    parser.add_argument("--profile", default=os.environ.get("HYPOTHESIS_PROFILE", "ci"),
                        help="Hypothesis profile: ci (fast, default) or dev (many examples)")
    parser.add_argument("--xfail", action="append", default=[], metavar="[METHOD::]CHECK",
                        help="declare a known failure (repeatable)")


@command("conformance", "run the shared conformance suite and print method x check outcomes", _conformance_args)
def _conformance(args: argparse.Namespace) -> int:
    from . import _require_hypothesis

    _require_hypothesis()
    from hypothesis import settings

    from ..plugins import registry
    from .cases import ConformanceError
    from .runner import check_names, register_profiles, run_suite

    register_profiles()
    settings.load_profile(args.profile)
    if args.all:
        methods = [spec.name for spec in registry()]
    elif args.methods:
        methods = [registry().get(m).name for m in args.methods]
    else:
        raise ConformanceError("name at least one METHOD (see `peft-core methods`) or pass --all.")
    if not methods:
        raise ConformanceError("no method plugins are installed; nothing to check.")
    results = {}
    for method in methods:
        xfails = [c for m, _, c in (e.rpartition("::") for e in args.xfail) if not m or m.upper() == method]
        print(f"checking {method} ...", file=sys.stderr, flush=True)
        results[method] = run_suite(method, expected_failures=xfails, checks=args.check, max_examples=args.max_examples)
    checks = [c for c in check_names() if any(r.check == c for rs in results.values() for r in rs)]
    extra = [r.check for rs in results.values() for r in rs if r.check not in checks]
    rows = []
    for check in [*dict.fromkeys(extra), *checks]:
        row = [check]
        for method in methods:
            found = [r for r in results[method] if r.check == check]
            row.append(found[0].outcome.value if found else "")
        rows.append(row)
    print(format_table(("check", *methods), rows))
    bad = [r for rs in results.values() for r in rs if r.outcome.bad]
    total = {m: sum(r.seconds for r in rs) for m, rs in results.items()}
    print("\n" + "  ".join(f"{m}: {t:.1f}s" for m, t in total.items()))
    if bad:
        print("\nfailures:")
        print(format_table(("method", "check", "why"), [(r.method, r.check, r.detail) for r in bad]))
        return 1
    return 0


def _new_method_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the method's name, e.g. 'mymethod' (peft_type MYMETHOD, package peft_core_mymethod)")
    parser.add_argument("--dir", default=".", help="where to create peft-core-<name>/ (default: here)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing directory")


@command("new-method", "write a complete, installable method plugin package that passes the conformance suite",
         _new_method_args)
def _new_method(args: argparse.Namespace) -> int:
    from .scaffold import write_plugin

    root = write_plugin(args.name, Path(args.dir), force=args.force)
    print(f"wrote {root}\nnext: pip install -e {root} && peft-core conformance {args.name.upper()}")
    return 0
