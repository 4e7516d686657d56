"""The X-LoRA classifier and the per-layer expert weights it feeds to the LoRA layers.

The classifier maps the last hidden state of the first ("scaling") pass to one weight per
expert, token and LoRA layer: a ``(batch, seq, n_layers, n_experts)`` tensor. Its modules
sit in ``layers`` as an ``nn.Sequential`` (Linear, ReLU, Dropout, …, Linear) so the saved
keys are PEFT's (``internal_xlora_classifier.layers.<i>.weight``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import XLoraConfig


class XLoraClassifier(nn.Module):
    """Hidden states -> expert weights ``(batch, seq, n_layers, n_experts)``."""

    def __init__(self, config: XLoraConfig, n_experts: int, n_layers: int) -> None:
        super().__init__()
        self.config = config
        self.n_experts, self.n_layers = n_experts, n_layers
        outputs = n_experts * n_layers if config.layerwise_scalings else n_experts
        width = config.hidden_size
        modules: list[nn.Module] = []
        for _ in range(config.xlora_depth - 1):
            modules += [nn.Linear(width, config.xlora_size), nn.ReLU()]
            if config.xlora_dropout_p > 0:
                modules.append(nn.Dropout(config.xlora_dropout_p))
            width = config.xlora_size
        modules.append(nn.Linear(width, outputs))
        self.layers = nn.Sequential(*modules)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.layers(hidden)
        batch, seq = hidden.shape[:2]
        if self.config.layerwise_scalings:
            logits = logits.reshape(batch, seq, self.n_layers, self.n_experts)
        else:  # one set of weights, shared by every layer
            logits = logits.unsqueeze(2).expand(-1, -1, self.n_layers, -1)
        if self.config.enable_softmax:
            return torch.softmax(logits / self.config.softmax_temperature, dim=-1)
        return logits


class MixingState:
    """The weights of the pass in progress, shared by every layer's :class:`ExpertWeights`.

    A plain object (not a module): it holds activations, not parameters. Each layer's top-k
    selection is computed once per pass, on that layer's slice, the first time the layer asks.
    """

    def __init__(self, config: XLoraConfig) -> None:
        self.config = config
        self.weights: torch.Tensor | None = None
        self._per_layer: dict[int, torch.Tensor] = {}
        self.in_scaling_pass = False

    def set(self, weights: torch.Tensor | None) -> None:
        self.weights = weights
        self._per_layer = {}

    def layer(self, index: int) -> torch.Tensor | None:
        if self.weights is None:
            return None
        found = self._per_layer.get(index)
        if found is None:
            found = self._per_layer[index] = sparsify(self.weights[:, :, index, :], self.config)
        return found


def sparsify(weights: torch.Tensor, config: XLoraConfig) -> torch.Tensor:
    """Keep each token's ``top_k_lora`` largest weights (zero the rest); softmax them with ``enable_softmax_topk``."""
    if config.top_k_lora is not None:
        keep = torch.zeros_like(weights, dtype=torch.bool)
        keep.scatter_(-1, torch.topk(weights, k=config.top_k_lora, dim=-1).indices, True)
        weights = weights * keep.to(weights.dtype)
    if config.enable_softmax_topk:
        kept = weights != 0
        weights = torch.softmax(weights.masked_fill(~kept, float("-inf")), dim=-1).masked_fill(~kept, 0.0)
    return weights


class ExpertWeights:
    """The ``TokenWeights`` provider installed on one LoRA layer (see ``peft_core_lora.hookspecs``).

    Gives expert ``k``'s weight per token at this layer, times ``global_scaling_weight``;
    ``None`` (plain LoRA) when no pass is in progress or the adapter is not an expert.
    """

    def __init__(self, state: MixingState, layer_index: int, experts: dict[str, int]) -> None:
        self.state, self.layer_index, self.experts = state, layer_index, experts

    def __call__(self, layer: Any, adapter_name: str, x: torch.Tensor) -> torch.Tensor | None:
        k = self.experts.get(adapter_name)
        weights = self.state.layer(self.layer_index)
        if k is None or weights is None:
            return None
        weight = weights[:, :, k].unsqueeze(-1)
        scale = self.state.config.global_scaling_weight
        return weight if scale == 1 else weight * scale
