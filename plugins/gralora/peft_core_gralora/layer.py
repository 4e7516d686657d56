"""GraLoRA layers: ``result + s · (G(x) + B_h A_h x)`` with ``G`` a k×k grid of low-rank blocks.

Input features are cut into ``k`` blocks and output features into ``k`` blocks; block
``(j, n)`` of the update maps input block ``n`` to output block ``j`` through its own rank
``r/k`` pair, so the whole update can reach rank ``r·k`` for LoRA's parameter count. The
pairs are stored PEFT's way, stacked per input block (``gralora_A`` ``(k, in/k, r)``) and per
output block (``gralora_B`` ``(k, r, out/k)``); :mod:`peft_core.lowrank` holds the index
bookkeeping. The optional hybrid part is a plain LoRA pair (``gralora_A_general`` /
``gralora_B_general``, ``nn.Linear`` factors) over the whole weight.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from peft_core.errors import TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.lowrank import (
    block_grid_apply,
    block_grid_product,
    dropout_module,
    low_rank_product,
    sync_fan_in_fan_out,
)
from peft_core.weights import LINEAR, LayerDescription


class GraloraLinear(AdapterLayer):
    """GraLoRA on ``nn.Linear`` and transformers ``Conv1D``."""

    method = "GRALORA"
    adapter_layer_names = ("gralora_A", "gralora_B", "gralora_A_general", "gralora_B_general")
    other_param_names = ("r", "hybrid_r", "alpha", "scaling", "gralora_dropout", "gralora_k")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.gralora_dropout = nn.ModuleDict()
        self.gralora_A = nn.ParameterDict()
        self.gralora_B = nn.ParameterDict()
        self.gralora_A_general = nn.ModuleDict()
        self.gralora_B_general = nn.ModuleDict()

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        k, r, hybrid_r = config.gralora_k, config.r, config.hybrid_r
        n_in, n_out = self.description.in_features, self.description.out_features
        if n_in % k or n_out % k:
            raise TargetModulesError(
                f"GraLoRA with gralora_k={k} needs in_features and out_features divisible by k, but {module_name!r} "
                f"is {n_in} → {n_out}. Pick a gralora_k dividing both, or leave this module out of target_modules."
            )
        self.r[adapter_name], self.hybrid_r[adapter_name], self.gralora_k[adapter_name] = r, hybrid_r, k
        self.alpha[adapter_name] = config.alpha
        self.scaling[adapter_name] = config.scaling
        self.gralora_dropout[adapter_name] = dropout_module(config.gralora_dropout)
        downs, ups = [], []
        for _ in range(k):  # PEFT's draw order: each block's A, then its B
            down, up = torch.empty(r, n_in // k), torch.empty(n_out // k, r)
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))
            if config.init_weights:
                nn.init.zeros_(up)
            else:
                nn.init.kaiming_uniform_(up, a=math.sqrt(5))
            downs.append(down)
            ups.append(up)
        self.gralora_A[adapter_name] = nn.Parameter(torch.stack(downs).transpose(1, 2).contiguous())
        self.gralora_B[adapter_name] = nn.Parameter(torch.stack(ups).transpose(1, 2).contiguous())
        if hybrid_r > 0:
            down_h, up_h = nn.Linear(n_in, hybrid_r, bias=False), nn.Linear(hybrid_r, n_out, bias=False)
            nn.init.kaiming_uniform_(down_h.weight, a=math.sqrt(5))
            if config.init_weights:
                nn.init.zeros_(up_h.weight)
            else:
                nn.init.kaiming_uniform_(up_h.weight, a=math.sqrt(5))
        else:  # nothing to save, as in PEFT
            down_h, up_h = nn.Identity(), nn.Identity()
        self.gralora_A_general[adapter_name] = down_h
        self.gralora_B_general[adapter_name] = up_h

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        down = self.gralora_A[adapter_name]
        dropout = self.gralora_dropout[adapter_name]
        x = x.to(down.dtype)
        update = block_grid_apply(dropout(x), down, self.gralora_B[adapter_name])
        if self.hybrid_r[adapter_name] > 0:
            update = update + self.gralora_B_general[adapter_name](self.gralora_A_general[adapter_name](dropout(x)))
        return result + (update * self.scaling[adapter_name]).to(result.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        delta = block_grid_product(self.gralora_A[adapter_name], self.gralora_B[adapter_name])
        if self.hybrid_r[adapter_name] > 0:
            delta = delta + low_rank_product(self.gralora_B_general[adapter_name].weight,
                                             self.gralora_A_general[adapter_name].weight)
        return delta * self.scaling[adapter_name]


def create_gralora_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> GraloraLinear:
    """The ``MethodSpec.layer_factory`` of GraLoRA; keeps ``fan_in_fan_out`` truthful for PEFT readers."""
    if description.kind != LINEAR:
        raise TargetModulesError(f"GraLoRA cannot adapt {module_name!r} ({description.kind}); it adapts linear layers.")
    sync_fan_in_fan_out(config, description, module_name)
    layer = GraloraLinear(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
