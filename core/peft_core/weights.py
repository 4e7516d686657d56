"""What a base module is, and a dense view of its weight — both through the plugin hooks.

Adapter layers never look at a base module's type directly: they ask these functions,
and plugins (the built-in one for ``torch.nn``, quantization backends for theirs) answer.
This is what lets N method plugins and M backend plugins cover N×M combinations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import TargetModulesError, UnsupportedOperation
from .plugins import hook

LINEAR = "linear"
CONV = "conv"
EMBEDDING = "embedding"
NORM = "norm"


@dataclass(frozen=True)
class LayerDescription:
    """A base module as adapter layers see it.

    ``in_features``/``out_features`` are of the canonical ``(out, in, *kernel)`` weight:
    for an Embedding, ``in`` is the vocabulary and ``out`` the embedding size.
    ``fan_in_fan_out`` says the module stores its weight transposed (``Conv1D``).
    ``quantized`` says the weight is not a plain tensor (read and write it through
    :func:`dense_weight`/:func:`write_dense_weight`).
    """

    kind: str
    in_features: int
    out_features: int
    kernel_size: tuple[int, ...] = ()
    fan_in_fan_out: bool = False
    quantized: bool = False
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def conv_dim(self) -> int:
        return len(self.kernel_size)


def describe_layer(module: nn.Module) -> LayerDescription | None:
    return hook().peft_core_describe_layer(module=module)


def require_description(module: nn.Module, name: str, method: str, kinds: tuple[str, ...],
                        known: LayerDescription | None = None) -> LayerDescription:
    """Describe ``module`` (or take ``known``, its description already made) or raise when ``method`` cannot adapt it."""
    desc = known if known is not None else describe_layer(module)
    if desc is None or desc.kind not in kinds:
        what = type(module).__name__ if desc is None else f"{type(module).__name__} ({desc.kind})"
        raise TargetModulesError(
            f"module {name!r} is a {what}, which {method} cannot adapt (supported kinds: {', '.join(kinds)}). "
            "Narrow target_modules to layers of those kinds, or install a plugin that describes this layer type."
        )
    return desc


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The weight of ``module`` as a dense ``(out, in, *kernel)`` tensor.

    An adapter layer stands for the module it wraps (layers of several methods may be
    stacked on one module): its base module's weight is read.
    """
    module = _unwrapped(module)
    weight = hook().peft_core_dense_weight(module=module)
    if weight is None:
        raise UnsupportedOperation(
            f"no installed plugin can read the weight of a {type(module).__name__} as a dense tensor; "
            "merging needs a backend plugin for this layer type."
        )
    return weight


def write_dense_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write a dense ``(out, in, *kernel)`` weight back into ``module`` (an adapter layer's base module)."""
    module = _unwrapped(module)
    if not hook().peft_core_write_dense_weight(module=module, weight=weight):
        raise UnsupportedOperation(
            f"no installed plugin can write the weight of a {type(module).__name__}; "
            "merging needs a backend plugin for this layer type."
        )


def _unwrapped(module: nn.Module) -> nn.Module:
    from .layer import base_of  # layer imports this module

    return base_of(module)
