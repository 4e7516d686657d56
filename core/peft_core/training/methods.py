"""Command-line options for every installed method, derived from its config dataclass.

``peft-core train --method lora --r 16 --lora-alpha 32`` works because LoRA's config has
fields ``r`` and ``lora_alpha``: this module turns the fields of every registered config
class into options and converts the strings back using the field's type hint. No method
is special-cased, so a third-party plugin's fields appear on the command line as soon as it
is installed. Options are declared as raw strings (methods may share a field name with
different types) and converted once the chosen method is known.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import re
import types
import typing
from typing import Any, Literal, Union

from ..config import PeftConfig
from ..errors import ConfigError

#: fields the command sets itself; not options
_COMMAND_OWNED = {f.name for f in dataclasses.fields(PeftConfig)}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}
_PLAIN_NAME = re.compile(r"[\w.\-]+")
DEST_PREFIX = "method_field__"


def method_fields(config_class: type[PeftConfig]) -> dict[str, Any]:
    """``{field name: type hint}`` of the fields a user may set for this method."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class)
            if f.init and f.name not in _COMMAND_OWNED}


def add_method_options(parser: argparse.ArgumentParser, specs: list[Any]) -> None:
    """Add ``--method`` and one option per config field of any installed method."""
    names = [s.name.lower() for s in specs]
    parser.add_argument("--method", default="lora", type=str.lower,
                        help=f"adapter method (installed: {', '.join(names) or 'none'}); default: lora")
    owners: dict[str, list[str]] = {}
    for spec in specs:
        for field in method_fields(spec.config_class):
            owners.setdefault(field, []).append(spec.name.lower())
    group = parser.add_argument_group("method options", "fields of the chosen method's config (see `peft-core methods`)")
    group.add_argument("--set", dest=DEST_PREFIX.rstrip("_"), action="append", default=[], metavar="FIELD=VALUE",
                       help="set a config field, like --FIELD VALUE; use it under launchers whose own option "
                            "abbreviations swallow short ones (torchrun reads --r as --rdzv-...)")
    for field in sorted(owners):
        flags = [f"--{field.replace('_', '-')}"] + ([f"--{field}"] if "_" in field else [])
        group.add_argument(*flags, dest=DEST_PREFIX + field, default=argparse.SUPPRESS, nargs="?", const="true",
                           metavar="VALUE", help=f"({', '.join(owners[field])})")


def given_fields(args: argparse.Namespace) -> dict[str, str]:
    """The method options the user actually passed, as raw strings (``--set`` ones included)."""
    fields = {k[len(DEST_PREFIX):]: v for k, v in vars(args).items() if k.startswith(DEST_PREFIX)}
    for item in getattr(args, DEST_PREFIX.rstrip("_"), None) or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set r=16.")
        fields[name.strip().replace("-", "_")] = value
    return fields


def build_config(spec: Any, raw: dict[str, str], **command_fields: Any) -> PeftConfig:
    """The chosen method's config from raw option strings; unknown fields name the method's real ones."""
    fields = method_fields(spec.config_class)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        shown = ", ".join("--" + u.replace("_", "-") for u in unknown)
        raise ConfigError(f"{shown} not a field of {spec.config_class.__name__} (method {spec.name.lower()}); "
                          f"its fields are: {', '.join(sorted(fields))}.")
    values = {}
    for name, text in raw.items():
        try:
            values[name] = from_cli(text, fields[name])
        except ValueError as exc:
            raise ConfigError(f"--{name.replace('_', '-')} {text!r}: {exc}") from None
    try:
        return spec.config_class(**values, **command_fields)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {spec.config_class.__name__}: {exc}") from exc


def from_cli(text: str, hint: Any) -> Any:
    """Convert one command-line string to a value of type ``hint``.

    Lists are comma-separated (``q_proj,v_proj``) or JSON; dicts and anything structured
    are JSON. Where a field takes "a list of names or a regex string" (``target_modules``),
    a plain name or comma list becomes a list and ``all-linear`` or a pattern stays a string.
    """
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint)]
    if origin in (Union, types.UnionType):
        if type(None) in args and text.strip().lower() in _NONE:
            return None
        options = [a for a in args if a is not type(None)]
        listy = [a for a in options if typing.get_origin(a) in (list, set, tuple)]
        if listy and (text.lstrip().startswith("[") or "," in text or (str in options and _PLAIN_NAME.fullmatch(text)
                                                                        and text != "all-linear")):
            return from_cli(text, listy[0])
        scalars = [a for a in options if a not in listy] or listy
        errors = []
        for option in sorted(scalars, key=_try_order):
            try:
                return from_cli(text, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        for allowed in args:
            if str(allowed) == text or (isinstance(allowed, bool) and text.lower() in (_TRUE if allowed else _FALSE)):
                return allowed
        raise ValueError(f"must be one of {list(args)}")
    if origin in (list, set, tuple, frozenset):
        items = json.loads(text) if text.lstrip().startswith("[") else [t.strip() for t in text.split(",") if t.strip()]
        item_hint = args[0] if args and args[0] is not Ellipsis else Any
        converted = [from_cli(str(i), item_hint) if isinstance(i, str) else i for i in items]
        return list(converted) if origin is not set else set(converted)
    if origin is dict or hint is dict:
        value = _json(text)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object, e.g. '{\"q_proj\": 8}'")
        return value
    if hint is bool:
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("expected true or false")
    if hint is int:
        return int(text)
    if hint is float:  # keep integers integers, as PEFT writes them (lora_alpha: 32, not 32.0)
        return int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else float(text)
    if hint is str:
        return text
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(text)
    try:  # Any, dataclass-valued and other structured fields: JSON if it parses, else the string
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _try_order(hint: Any) -> int:
    """In a Union, try the strict types first so ``"8"`` is an int and ``"true"`` a bool before a string."""
    return {bool: 0, int: 1, float: 2}.get(hint, 4 if hint is str else 3)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
