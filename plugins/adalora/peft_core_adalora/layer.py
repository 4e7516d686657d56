"""AdaLoRA's SVD-form layer: ``result + (alpha / ranknum) · B diag(E) A x``.

``lora_A`` (r, in) and ``lora_B`` (out, r) play the singular vectors and ``lora_E`` (r, 1)
the singular values; pruning a triplet is zeroing its entry of E, so the layer keeps its
shapes and masking is all allocation needs. ``ranknum`` is the rank the layer was built
with and stays fixed (PEFT keeps it when it resizes), so the scaling does not jump when
ranks are pruned; it is a plain number, never saved. Merging, disabling and mixed
batches come from :class:`peft_core.layer.AdapterLayer`; Conv1D's transposed storage is
the weight hooks' business.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_core.layer import AdapterLayer
from peft_core.weights import LayerDescription

#: added to ``ranknum`` in the scaling, as PEFT does (keeps an empty layer finite)
RANK_EPS = 1e-5


class AdaLoraLinear(AdapterLayer):
    """AdaLoRA on ``nn.Linear`` and transformers ``Conv1D``."""

    method = "ADALORA"
    adapter_layer_names = ("lora_A", "lora_B", "lora_E")
    other_param_names = ("r", "lora_alpha", "scaling", "ranknum", "lora_dropout")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.lora_A, self.lora_B, self.lora_E = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()

    def update_layer(self, adapter_name: str, config: Any, **kwargs: Any) -> None:
        r, d = config.init_r, self.description
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = config.lora_alpha
        self.scaling[adapter_name] = config.lora_alpha if config.lora_alpha > 0 else float(r)
        self.ranknum[adapter_name] = float(r)
        p = config.lora_dropout
        self.lora_dropout[adapter_name] = nn.Dropout(p) if p > 0 else nn.Identity()
        # the same global-RNG draws, in the same order, as PEFT (a seed gives PEFT's adapter)
        A, E, B = torch.randn(r, d.in_features), torch.randn(r, 1), torch.randn(d.out_features, r)
        torch.randn(1)  # PEFT draws its ranknum parameter here before overwriting it
        if config.init_lora_weights:
            nn.init.zeros_(E)
            nn.init.normal_(A, mean=0.0, std=0.02)
            nn.init.normal_(B, mean=0.0, std=0.02)
        self.lora_A[adapter_name], self.lora_E[adapter_name] = nn.Parameter(A), nn.Parameter(E)
        self.lora_B[adapter_name] = nn.Parameter(B)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        A, E, B = self.lora_A[adapter_name], self.lora_E[adapter_name], self.lora_B[adapter_name]
        x = self.lora_dropout[adapter_name](x.to(A.dtype))
        scale = self.scaling[adapter_name] / (self.ranknum[adapter_name] + RANK_EPS)
        return result + ((x @ (A * E).T @ B.T) * scale).to(result.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        A, E, B = self.lora_A[adapter_name], self.lora_E[adapter_name], self.lora_B[adapter_name]
        return B @ (A * E) * self.scaling[adapter_name] / (self.ranknum[adapter_name] + RANK_EPS)

    def orth_penalty(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``‖A Aᵀ − I‖_F`` and ``‖Bᵀ B − I‖_F``: how far A's rows and B's columns are from orthonormal."""
        A, B = self.lora_A[adapter_name], self.lora_B[adapter_name]
        eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        return torch.linalg.matrix_norm(A @ A.T - eye), torch.linalg.matrix_norm(B.T @ B - eye)


def create_adalora_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> AdaLoraLinear:
    """The ``MethodSpec.layer_factory`` of AdaLoRA."""
    layer = AdaLoraLinear(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
