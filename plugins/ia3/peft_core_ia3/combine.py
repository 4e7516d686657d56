"""IA³'s half of ``add_weighted_adapter`` (the ``peft_core_combine_adapters`` hook).

The combined vector is the weighted sum ``Σ wᵢ lᵢ`` of the source vectors, as PEFT's IA³
``add_weighted_adapter`` computes it. IA³ vectors have no rank, so ``svd`` (the core's
default ``combination_type``) means the same weighted sum; a PEFT-style call without a
``combination_type`` therefore gives PEFT's result. Pruning and concatenating types have
no meaning for scaling vectors and are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from peft_core import hookimpl
from peft_core.errors import ConfigError, UnsupportedOperation
from peft_core.merging import Combination

from .config import IA3Config
from .layer import IA3Layer

SUPPORTED = ("linear", "svd")


def _union(values: list[Any], field: str) -> Any:
    kinds = {type(v) for v in values}
    if len(kinds) > 1:
        raise ConfigError(
            f"the adapters' {field} mix lists, regular expressions and None; combining them is not supported. "
            f"Re-create the adapters with the same form of {field}."
        )
    if isinstance(values[0], str):
        return values[0] if len(set(values)) == 1 else "|".join(f"({v})" for v in values)
    if values[0] is None:
        return None
    return set().union(*values)


class IA3Combiner:
    """Weighted sum of IA³ vectors; built by :func:`peft_core_combine_adapters`."""

    def __init__(self, configs: list[IA3Config], combination: Combination) -> None:
        if combination.combination_type not in SUPPORTED:
            raise UnsupportedOperation(
                f"combination_type {combination.combination_type!r} is not available for IA³ adapters: their "
                "vectors are combined as a weighted sum; use combination_type='linear'."
            )
        self.config = dataclasses.replace(
            configs[0],
            target_modules=_union([c.target_modules for c in configs], "target_modules"),
            feedforward_modules=_union([c.feedforward_modules for c in configs], "feedforward_modules"),
        )

    def combine(self, layer: IA3Layer, adapter_name: str, sources: list[tuple[str, float]]) -> None:
        target = layer.ia3_l[adapter_name]
        for name, _ in sources:
            if layer.is_feedforward[name] != layer.is_feedforward[adapter_name]:
                raise ConfigError(
                    f"adapter {name!r} scales the {'input' if layer.is_feedforward[name] else 'output'} of this layer "
                    "but the combined adapter would scale the other side; combine adapters that agree on "
                    "feedforward_modules."
                )
        target.zero_()
        for name, weight in sources:
            target += layer.ia3_l[name].to(target.dtype) * weight


@hookimpl
def peft_core_combine_adapters(spec: Any, configs: list[Any], combination: Combination) -> IA3Combiner | None:
    if spec.name != "IA3":
        return None
    return IA3Combiner(configs, combination)
