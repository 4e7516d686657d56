"""The ``peft-core`` command.

Each subcommand is a function registered with :func:`command`; features living in other
modules (conformance, training) register theirs in :data:`COMMAND_MODULES`, which are
imported only when the CLI starts, so ``import peft_core`` stays light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from .errors import PeftCoreError
from .tables import format_table

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}

#: modules that register more subcommands when imported
COMMAND_MODULES: list[str] = ["peft_core.conformance.command", "peft_core.training.commands"]


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``peft-core NAME``: ``configure`` adds its arguments, the function runs it."""

    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = (help, configure, handler)
        return handler

    return register


def _methods_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="also list hook plugins without methods")


@command("methods", "list installed method plugins, their capabilities and distributions", _methods_args)
def _methods(args: argparse.Namespace) -> int:
    from .plugins import plugin_infos, registry

    infos = plugin_infos()
    versions = {p.name: p.version for p in infos}
    rows = [
        (spec.name, spec.config_class.__name__, spec.distribution or "-", versions.get(spec.plugin_name) or "-",
         ", ".join(sorted(c.value for c in spec.capabilities)))
        for spec in registry()
    ]
    print(format_table(("method", "config", "distribution", "version", "capabilities"), rows))
    failed = [p for p in infos if p.error]
    if failed:
        print("\nplugins that failed to load (skipped):")
        print(format_table(("plugin", "distribution", "error"), [(p.name, p.distribution or "-", p.error) for p in failed]))
    if args.verbose:
        print("\nall plugins:")
        print(format_table(("plugin", "distribution", "status"),
                           [(p.name, p.distribution or "-", "failed" if p.error else "loaded") for p in infos]))
    return 1 if failed and not rows else 0


def build_parser() -> argparse.ArgumentParser:
    for module in COMMAND_MODULES:
        import_module(module)
    parser = argparse.ArgumentParser(prog="peft-core", description="peft-core: parameter-efficient fine-tuning, every method a plugin.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"peft-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, configure, handler) in sorted(_COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except PeftCoreError as exc:
        print(f"peft-core {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
