"""LoRA's half of hot-swapping (``peft_core_hotswap_support``): scaling and rank padding.

A LoRA adapter's output depends on its factors (copied in place by the core) and on one
number per layer, ``scaling = alpha / r`` (or ``/ √r``). A compiled graph specialises on
that float, so :meth:`LoraHotswap.prepare` turns it into a 0-d tensor that later swaps
rewrite with ``fill_``. Padding to a target rank appends zero rows to A and zero columns to
B: ``B A`` — and so every output — is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from peft_core import hookimpl
from peft_core.errors import ConfigError
from peft_core.targeting import pattern_value

from .layer import LoraEmbedding, LoraLayer


def _padded(tensor: torch.Tensor, dim: int, target: int) -> torch.Tensor:
    if tensor.shape[dim] > target:
        raise ConfigError(
            f"cannot pad an adapter of rank {tensor.shape[dim]} down to target_rank={target}; "
            "pass a target_rank at least as large as every adapter's rank."
        )
    shape = list(tensor.shape)
    shape[dim] = target - tensor.shape[dim]
    return torch.cat([tensor.detach(), tensor.new_zeros(shape)], dim=dim)


def _set_scaling(layer: LoraLayer, adapter_name: str, value: float) -> None:
    current = layer.scaling[adapter_name]
    if isinstance(current, torch.Tensor):
        current.fill_(value)
    else:
        layer.scaling[adapter_name] = value


class LoraHotswap:
    """The :class:`peft_core.hotswap.HotswapSupport` of LoRA."""

    #: alpha and rank are swapped (through scaling); these change outputs in ways a swap cannot
    compatible_fields = ("use_rslora", "lora_dropout", "use_dora", "lora_bias", "fan_in_fan_out")

    def update_settings(self, layer: Any, adapter_name: str, config: Any, module_name: str) -> None:
        if not isinstance(layer, LoraLayer):
            return
        r = pattern_value(config.rank_pattern or {}, module_name, config.r)
        alpha = pattern_value(config.alpha_pattern or {}, module_name, config.lora_alpha)
        layer.r[adapter_name] = r
        layer.lora_alpha[adapter_name] = alpha
        _set_scaling(layer, adapter_name, alpha / math.sqrt(r) if config.use_rslora else alpha / r)

    def prepare(self, layer: Any, adapter_name: str, target_rank: int | None) -> None:
        if not isinstance(layer, LoraLayer):
            return
        scaling = layer.scaling[adapter_name]
        if not isinstance(scaling, torch.Tensor):
            device = next(iter(layer.adapter_parameters(adapter_name))).device
            layer.scaling[adapter_name] = torch.tensor(float(scaling), device=device)
        if target_rank is None:
            return
        if isinstance(layer, LoraEmbedding):
            for attr, dim in (("lora_embedding_A", 0), ("lora_embedding_B", 1)):
                old = getattr(layer, attr)[adapter_name]
                getattr(layer, attr)[adapter_name] = nn.Parameter(_padded(old, dim, target_rank), old.requires_grad)
            return
        A, B = layer.lora_A[adapter_name], layer.lora_B[adapter_name]
        A.weight = nn.Parameter(_padded(A.weight, 0, target_rank), A.weight.requires_grad)
        B.weight = nn.Parameter(_padded(B.weight, 1, target_rank), B.weight.requires_grad)
        # keep the factor modules' own bookkeeping truthful (repr, state-dict readers)
        for module, attr in ((A, "out_features"), (A, "out_channels"), (B, "in_features"), (B, "in_channels")):
            if hasattr(module, attr):
                setattr(module, attr, target_rank)

    def prepare_config(self, config: Any, target_rank: int) -> None:
        config.r = target_rank
        if config.rank_pattern:
            config.rank_pattern = {key: target_rank for key in config.rank_pattern}


@hookimpl
def peft_core_hotswap_support(spec: Any) -> LoraHotswap | None:
    return LoraHotswap() if spec.name == "LORA" else None
