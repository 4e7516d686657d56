"""Adapter-name rules, in one place: names end up in paths and state-dict keys."""

from __future__ import annotations

import re

from .errors import AdapterNameError

BASE_ADAPTER_NAME = "__base__"  # the rows of a mixed batch that use no adapter
_VALID = re.compile(r"[A-Za-z0-9_\-]+")


def validate_adapter_name(name: object, prefixes: tuple[str, ...] = ()) -> str:
    """Return ``name`` if it is safe to use as a directory and key component, else raise.

    Names must be non-empty strings of letters, digits, ``_`` and ``-`` (so ``save_pretrained``
    can never write outside its directory and keys stay unambiguous), must not be the
    reserved ``__base__``, and must not start with a method prefix such as ``lora_``.
    """
    if not isinstance(name, str) or not name:
        raise AdapterNameError(f"adapter name must be a non-empty string, got {name!r}.")
    if not _VALID.fullmatch(name) or name in {".", ".."}:
        raise AdapterNameError(
            f"adapter name {name!r} may only contain letters, digits, '_' and '-' "
            "(it becomes a directory name and part of parameter names)."
        )
    if name == BASE_ADAPTER_NAME:
        raise AdapterNameError(f"{BASE_ADAPTER_NAME!r} is reserved for base-model rows in mixed batches.")
    if _clashes_with_module_attribute(name):
        raise AdapterNameError(
            f"adapter name {name!r} is an attribute of torch modules (adapters are stored in "
            "nn.ModuleDict/nn.ParameterDict, which cannot hold it); choose another name."
        )
    for prefix in prefixes:
        if name.startswith(prefix):
            raise AdapterNameError(
                f"adapter name {name!r} starts with the method prefix {prefix!r}, which would make "
                "state-dict keys ambiguous; choose another name."
            )
    return name


def _clashes_with_module_attribute(name: str) -> bool:
    """``training``, ``forward``, ``keys`` … cannot be keys of ``nn.ModuleDict``/``nn.ParameterDict``."""
    from torch import nn

    return any(hasattr(container, name) for container in (nn.ModuleDict(), nn.ParameterDict()))
