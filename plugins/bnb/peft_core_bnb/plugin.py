"""The bitsandbytes backend plugin (entry point ``peft_core: bnb``).

It implements only the core's tuner-layer hooks: what a ``Linear4bit``/``Linear8bitLt``
is, and how to read and write its weight densely. The core's built-in implementations
are ``trylast``, so these answer first for bitsandbytes layers and return ``None`` for
everything else. Adapter layers call the base layer's own ``forward`` (bitsandbytes'
kernels) and use the dense weight only to merge — so every layer method works on a
quantized base without a bitsandbytes-specific file.
"""

from __future__ import annotations

import torch
from torch import nn

from peft_core import hookimpl
from peft_core.weights import LINEAR, LayerDescription

from .conformance import peft_core_conformance_model_kinds, peft_core_weight_rounding  # noqa: F401  (hook implementations)
from .quant import bnb_kind, compute_dtype, dequantize, requantize, settings


@hookimpl
def peft_core_describe_layer(module: nn.Module) -> LayerDescription | None:
    if bnb_kind(module) is None:
        return None
    return LayerDescription(
        LINEAR,
        module.in_features,
        module.out_features,
        quantized=True,
        dtype=compute_dtype(module),
        device=module.weight.device,
        extra=settings(module),
    )


@hookimpl
def peft_core_dense_weight(module: nn.Module) -> torch.Tensor | None:
    if bnb_kind(module) is None:
        return None
    return dequantize(module)


@hookimpl
def peft_core_write_dense_weight(module: nn.Module, weight: torch.Tensor) -> bool | None:
    if bnb_kind(module) is None:
        return None
    requantize(module, weight)
    return True
