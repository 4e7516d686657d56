"""DeLoRA layers: low-rank updates whose direction and strength are learned apart.

An adapter holds ``A (r × in)``, ``B (out × r)`` and one trainable ``λ``. Each rank-one term
``B[:, i] A[i, :]`` is divided by ``‖B[:, i]‖ ‖A[i, :]‖``, so it has unit Frobenius norm, and
the sum is scaled by ``λ / r``: whatever the factors learn, ``‖B Ξ A‖ ≤ λ``. The update's
columns are then scaled by the base weight's column norms ``w_norm`` (taken when the adapter
is created, saved with it), so the bound is relative to the weight it adapts:

``ΔW = (λ / r) · B · diag(1 / (‖A_i‖ ‖B^i‖)) · A · diag(w_norm)``

Norms are clamped at 1e-4 so a zero ``B`` (the identity init) stays finite. The forward
applies the factors to the input (never forming ``ΔW``); merging adds ``ΔW`` through the
core's weight hooks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from peft_core.buffers import BufferDict
from peft_core.errors import TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.weights import LINEAR, LayerDescription, dense_weight

#: smallest factor norm used when normalizing (keeps a zero B finite)
NORM_FLOOR = 1e-4


def rank_one_scales(A: torch.Tensor, B: torch.Tensor, delora_lambda: torch.Tensor, r: int) -> torch.Tensor:
    """``λ / r / (‖A_i‖ ‖B^i‖)`` for each of the ``r`` rank-one terms."""
    a_norms = A.norm(dim=1).clamp(min=NORM_FLOOR)
    b_norms = B.norm(dim=0).clamp(min=NORM_FLOOR)
    return delora_lambda / r / (a_norms * b_norms)


class DeloraLayer(AdapterLayer):
    """DeLoRA on ``nn.Linear``."""

    method = "DELORA"
    adapter_layer_names = ("delora_A", "delora_B", "delora_lambda", "delora_w_norm")
    other_param_names = ("r", "delora_module_dropout")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.delora_A = nn.ParameterDict()
        self.delora_B = nn.ParameterDict()
        self.delora_lambda = nn.ParameterDict()
        self.delora_w_norm = BufferDict()

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        r = config.rank_for(module_name)
        d = self.description
        A = torch.empty(r, d.in_features)
        B = torch.empty(d.out_features, r)
        # draw order as in PEFT (A, then B when random), so a seeded run gives the same factors
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        if config.init_weights:
            B.zero_()
        else:
            nn.init.kaiming_uniform_(B, a=math.sqrt(5))
        self.r[adapter_name] = r
        self.delora_module_dropout[adapter_name] = float(config.module_dropout)
        self.delora_A[adapter_name] = nn.Parameter(A)
        self.delora_B[adapter_name] = nn.Parameter(B)
        self.delora_lambda[adapter_name] = nn.Parameter(torch.tensor([float(config.lambda_for(module_name))]))
        with torch.no_grad():
            # per input column; fixed for the adapter's life, so merging and unmerging use the same update
            self.delora_w_norm[adapter_name] = dense_weight(self.base_layer).float().norm(dim=0)

    def _scales(self, adapter_name: str) -> torch.Tensor:
        return rank_one_scales(self.delora_A[adapter_name], self.delora_B[adapter_name],
                               self.delora_lambda[adapter_name], self.r[adapter_name])

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        B = self.delora_B[adapter_name] * self._scales(adapter_name)
        return (B @ self.delora_A[adapter_name]) * self.delora_w_norm[adapter_name]

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        A = self.delora_A[adapter_name]
        p = self.delora_module_dropout[adapter_name]
        x = F.dropout(x.to(A.dtype), p=p, training=self.training) if p > 0 else x.to(A.dtype)
        h = F.linear(x * self.delora_w_norm[adapter_name], A) * self._scales(adapter_name)
        return result + F.linear(h, self.delora_B[adapter_name]).to(result.dtype)


def create_delora_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> DeloraLayer:
    """The ``MethodSpec.layer_factory`` of DeLoRA: ``nn.Linear`` targets only, as in PEFT."""
    if description.kind != LINEAR or description.fan_in_fan_out:
        what = "a Conv1D (transposed) layer" if description.kind == LINEAR else f"a {description.kind} layer"
        raise TargetModulesError(
            f"DeLoRA cannot adapt {module_name!r}, {what}; it adapts nn.Linear layers (as PEFT's DeLoRA does). "
            "Narrow target_modules to linear layers."
        )
    layer = DeloraLayer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
