"""IA³ layers: one learned vector per adapter rescales a layer's input or output.

A *feed-forward* target scales its input, ``W (l ⊙ x) + b`` (``ia3_l`` of shape ``(1, in)``);
any other target scales its output, ``l ⊙ (W x + b)`` (``(out, 1)``); on convolutions the
vector is ``(1, channels, 1, …)`` either way. Those are the shapes Hugging Face PEFT saves.

IA³ is multiplicative, so the layer overrides the merge protocol's ``merged_weight`` /
``unmerged_weight`` (scale columns or rows of the weight) and, for output scaling, scales
the bias too. Several active IA³ adapters multiply: the forward folds all input vectors
into one input scale and all output vectors into one output scale, then runs the base
layer once. Whether a target is feed-forward is recorded per adapter, so two adapters
may disagree about a module.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from peft_core.errors import TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.weights import CONV, LINEAR, LayerDescription, dense_weight


def _safe_divide(value: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``value / scale`` where a zero scale (information lost when merging) leaves zero."""
    return torch.where(scale == 0, torch.zeros_like(value), value / torch.where(scale == 0, torch.ones_like(scale), scale))


class IA3Layer(AdapterLayer):
    """What every IA³ layer shares: the vectors, per-adapter feed-forward flags, forward and merging."""

    method = "IA3"
    adapter_layer_names = ("ia3_l",)
    other_param_names = ("is_feedforward",)

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.ia3_l = nn.ParameterDict()

    # -- building -------------------------------------------------------------------------

    def vector_shape(self, feedforward: bool) -> tuple[int, ...]:
        raise NotImplementedError

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        feedforward = config.is_feedforward(module_name)
        self.is_feedforward[adapter_name] = feedforward
        # drawn even when reset to ones, so a seed leaves the global RNG where PEFT leaves it
        vector = torch.randn(self.vector_shape(feedforward))
        if config.init_ia3_weights:
            vector.fill_(1.0)
        self.ia3_l[adapter_name] = nn.Parameter(vector)

    # -- forward --------------------------------------------------------------------------

    def scale_vector(self, adapter_name: str) -> torch.Tensor:
        """``ia3_l`` shaped to broadcast against the activation it scales."""
        return self.ia3_l[adapter_name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._disable_adapters or self._routing is not None or self.merged:
            return super().forward(x, *args, **kwargs)
        scale_in = scale_out = None
        for name in self._active_adapters:
            vector = self.scale_vector(name)
            if self.is_feedforward[name]:
                scale_in = vector if scale_in is None else scale_in * vector
            else:
                scale_out = vector if scale_out is None else scale_out * vector
        if scale_in is not None:
            x = (x.to(scale_in.dtype) * scale_in).to(x.dtype)
        result = self.base_layer(x, *args, **kwargs)
        if scale_out is not None:
            result = (result * scale_out).to(result.dtype)
        return result

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """One adapter alone (rows of a mixed batch): input scaling reruns the base layer on ``l ⊙ x``."""
        vector = self.scale_vector(adapter_name)
        if self.is_feedforward[adapter_name]:
            return self.base_layer((x.to(vector.dtype) * vector).to(x.dtype)).to(result.dtype)
        return (result * vector).to(result.dtype)

    # -- merging --------------------------------------------------------------------------

    def weight_scale(self, adapter_name: str) -> torch.Tensor:
        """``ia3_l`` shaped to broadcast against the canonical ``(out, in, *kernel)`` weight."""
        raise NotImplementedError

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        return (weight * self.weight_scale(adapter_name)).to(weight.dtype)

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        return _safe_divide(weight, self.weight_scale(adapter_name).to(weight.dtype)).to(weight.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: Any = None) -> None:
        names = list(self._active_adapters if adapter_names is None else adapter_names)
        zeros = [n for n in names if n in self.ia3_l and n not in self.merged_adapters
                 and bool((self.ia3_l[n] == 0).any())]
        if zeros:
            warnings.warn(f"IA³ adapter(s) {zeros} have zero entries; merging them cannot be undone exactly by "
                          "unmerge (those weights stay zero).", UserWarning, stacklevel=3)
        super().merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def _bias_scale(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Output scaling scales the bias too (``b → l·b``); input scaling leaves it alone."""
        bias = getattr(self.base_layer, "bias", None)
        if self.is_feedforward[adapter_name] or bias is None:
            return None
        bias = bias.detach()
        return bias, self.ia3_l[adapter_name].detach().reshape(bias.shape).to(bias.dtype)

    def merged_bias(self, adapter_name: str) -> torch.Tensor | None:
        pair = self._bias_scale(adapter_name)
        return None if pair is None else pair[0] * pair[1]

    def unmerged_bias(self, adapter_name: str) -> torch.Tensor | None:
        pair = self._bias_scale(adapter_name)
        return None if pair is None else _safe_divide(pair[0], pair[1])

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``merged − W`` (IA³ has no additive form of its own; this is for inspection only)."""
        weight = dense_weight(self.base_layer)
        return self.merged_weight(weight, adapter_name) - weight


class IA3Linear(IA3Layer):
    """IA³ on ``nn.Linear`` and transformers ``Conv1D`` (vectors ``(1, in)`` / ``(out, 1)``)."""

    def vector_shape(self, feedforward: bool) -> tuple[int, ...]:
        d = self.description
        return (1, d.in_features) if feedforward else (d.out_features, 1)

    def scale_vector(self, adapter_name: str) -> torch.Tensor:
        return self.ia3_l[adapter_name].flatten()

    def weight_scale(self, adapter_name: str) -> torch.Tensor:
        return self.ia3_l[adapter_name].detach()  # (1, in) scales columns, (out, 1) rows


class IA3Conv(IA3Layer):
    """IA³ on ``nn.Conv1d/2d/3d`` (vector ``(1, channels, 1, …)``; grouped convolutions too)."""

    def vector_shape(self, feedforward: bool) -> tuple[int, ...]:
        d = self.description
        return (1, d.in_features if feedforward else d.out_features) + (1,) * d.conv_dim

    def weight_scale(self, adapter_name: str) -> torch.Tensor:
        vector = self.ia3_l[adapter_name].detach()
        if not self.is_feedforward[adapter_name]:
            return vector.transpose(0, 1)  # (out, 1, 1, …): scales output channels
        d = self.description
        groups = d.extra.get("groups", 1)
        if groups == 1:
            return vector
        # the weight is (out, in/groups, *k): each group's output channels see only their inputs
        per_in, per_out, ones = d.in_features // groups, d.out_features // groups, (1,) * d.conv_dim
        grouped = vector.reshape(groups, 1, per_in, *ones).expand(groups, per_out, per_in, *ones)
        return grouped.reshape(d.out_features, per_in, *ones)


_LAYERS = {LINEAR: IA3Linear, CONV: IA3Conv}


def create_ia3_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> IA3Layer:
    """The ``MethodSpec.layer_factory`` of IA³; keeps ``fan_in_fan_out`` truthful as PEFT does."""
    if description.kind not in _LAYERS:
        raise TargetModulesError(f"IA³ cannot adapt {module_name!r} ({description.kind}); it adapts linear and convolution layers.")
    if description.kind == LINEAR and description.fan_in_fan_out != config.fan_in_fan_out:
        layout = "Conv1D (stored (in, out))" if description.fan_in_fan_out else "nn.Linear"
        warnings.warn(f"target {module_name!r} is a {layout} layer; setting fan_in_fan_out={description.fan_in_fan_out}.",
                      UserWarning, stacklevel=2)
        config.fan_in_fan_out = description.fan_in_fan_out
    layer = _LAYERS[description.kind](target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
