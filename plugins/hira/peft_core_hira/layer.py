"""HiRA layers: ``result + (W ⊙ ΔH) x`` with ``ΔH = B A`` of rank ``r`` and ``W`` the frozen weight.

The update ``W ⊙ ΔH`` is additive in form but depends on the base weight, so merging has a
subtlety: with several adapters merged one after another, each must modulate the *original*
``W₀``, not a weight that already holds other updates (``W₀ ⊙ (1 + Σ ΔHᵢ)``, as PEFT merges).
The layer keeps ``W₀`` from the first merge until everything is unmerged, and the last
unmerge restores it exactly.

Shapes as PEFT saves them: Linear/Conv1D ``hira_A`` ``(r, in)``, ``hira_B`` ``(out, r)``;
Conv ``hira_A`` ``(r, in, *kernel)``, ``hira_B`` ``(out, r, 1, …)``; Embedding
``hira_embedding_A`` ``(r, vocab)``, ``hira_embedding_B`` ``(dim, r)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft_core.errors import TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.lowrank import dropout_module, low_rank_product, sync_fan_in_fan_out
from peft_core.targeting import pattern_value
from peft_core.weights import CONV, EMBEDDING, LINEAR, LayerDescription, dense_weight

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class HiraLayer(AdapterLayer):
    """What every HiRA layer shares: factors, dropout, init, the Hadamard-modulated update, merging."""

    method = "HIRA"
    #: the (down, up) factor containers; embeddings use PEFT's ``hira_embedding_A/B`` names instead
    adapter_layer_names: tuple[str, ...] = ("hira_A", "hira_B")
    other_param_names = ("r", "hira_dropout")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.hira_dropout = nn.ModuleDict()
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ParameterDict())
        self.__dict__["_weight_before_merge"] = None

    # -- building -------------------------------------------------------------------------

    def factor_shapes(self, r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        d = self.description
        return (r, d.in_features), (d.out_features, r)

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", new_layer: bool = False,
                     **kwargs: Any) -> None:
        # PEFT 0.21.2 builds new HiRA layers with config.r and consults rank_pattern only when it adds
        # an adapter to a layer that already holds one; the same here, or files would not be interchangeable
        r = config.r if new_layer else pattern_value(config.rank_pattern or {}, module_name, config.r)
        self.r[adapter_name] = r
        self.hira_dropout[adapter_name] = dropout_module(config.hira_dropout)
        down_shape, up_shape = self.factor_shapes(r)
        # drawn in PEFT's order (A then B), so a seed gives PEFT's adapter before re-initialisation
        down, up = torch.randn(down_shape), torch.randn(up_shape)
        down_name, up_name = self.adapter_layer_names
        getattr(self, down_name)[adapter_name] = nn.Parameter(down)
        getattr(self, up_name)[adapter_name] = nn.Parameter(up)
        self.reset_parameters(adapter_name, config.init_weights)

    def reset_parameters(self, adapter_name: str, init: bool | str) -> None:
        """``True``: Kaiming-uniform ``A``, zero ``B`` (an identity adapter); ``"gaussian"``: ``A ~ N(0, 1/r)``."""
        if init is False:
            return
        down = getattr(self, self.adapter_layer_names[0])[adapter_name]
        up = getattr(self, self.adapter_layer_names[1])[adapter_name]
        if init == "gaussian":
            nn.init.normal_(down, std=1 / self.r[adapter_name])
        else:
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))
        nn.init.zeros_(up)

    # -- the update -----------------------------------------------------------------------

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``ΔH = B A`` in the canonical ``(out, in, *kernel)`` layout: the *modulation*, not ``W ⊙ ΔH``."""
        down = getattr(self, self.adapter_layer_names[0])[adapter_name]
        up = getattr(self, self.adapter_layer_names[1])[adapter_name]
        return low_rank_product(up, down)

    def modulated_weight(self, adapter_name: str) -> torch.Tensor:
        """``W ⊙ ΔH`` for the current (unmerged) base weight, in the adapter's dtype."""
        modulation = self.get_delta_weight(adapter_name)
        return dense_weight(self.base_layer).to(modulation.dtype) * modulation

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        weight = self.modulated_weight(adapter_name)
        x = self.hira_dropout[adapter_name](x.to(weight.dtype))
        return result + self.apply_weight(x, weight).to(result.dtype)

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The base layer's operation with ``weight`` in place of its own, no bias."""
        raise NotImplementedError

    # -- merging --------------------------------------------------------------------------

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        if not self.merged_adapters or self._weight_before_merge is None:
            self.__dict__["_weight_before_merge"] = weight.detach().clone()
        original = self._weight_before_merge.to(weight.dtype)
        return weight + original * self.get_delta_weight(adapter_name).detach().to(weight.dtype)

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        original = self._weight_before_merge
        if not self.merged_adapters:  # the last one out: give back W₀ exactly
            self.__dict__["_weight_before_merge"] = None
            return original
        return weight - original.to(weight.dtype) * self.get_delta_weight(adapter_name).detach().to(weight.dtype)


class HiraLinear(HiraLayer):
    """HiRA on ``nn.Linear`` and transformers ``Conv1D``."""

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)


class HiraEmbedding(HiraLayer):
    """HiRA on ``nn.Embedding``: the looked-up rows of ``W ⊙ ΔH`` are added to the base embedding."""

    adapter_layer_names = ("hira_embedding_A", "hira_embedding_B")

    def reset_parameters(self, adapter_name: str, init: bool | str) -> None:
        """As PEFT does for embeddings: ``A`` zeros, ``B`` standard normal (``"gaussian"`` too)."""
        if init is False:
            return
        nn.init.zeros_(self.hira_embedding_A[adapter_name])
        nn.init.normal_(self.hira_embedding_B[adapter_name])

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        # canonical (dim, vocab) -> lookup table (vocab, dim); token ids are not dropped out
        table = self.modulated_weight(adapter_name).T
        return result + F.embedding(x, table).to(result.dtype)


class HiraConv(HiraLayer):
    """HiRA on ``nn.Conv1d/2d/3d`` (not grouped: ``W ⊙ ΔH`` needs ``ΔH`` shaped like the grouped weight)."""

    def factor_shapes(self, r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        d = self.description
        return (r, d.in_features, *d.kernel_size), (d.out_features, r, *(1,) * d.conv_dim)

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        extra = self.description.extra
        return _CONV_FN[self.description.conv_dim](
            x, weight, None, stride=extra["stride"], padding=extra["padding"], dilation=extra["dilation"]
        )


_LAYERS = {LINEAR: HiraLinear, CONV: HiraConv, EMBEDDING: HiraEmbedding}


def create_hira_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> HiraLayer:
    """The ``MethodSpec.layer_factory`` of HiRA; keeps ``fan_in_fan_out`` truthful as PEFT does."""
    if description.kind not in _LAYERS:
        raise TargetModulesError(
            f"HiRA cannot adapt {module_name!r} ({description.kind}); it adapts linear, convolution and embedding layers."
        )
    if description.kind == CONV and description.extra.get("groups", 1) > 1:
        raise TargetModulesError(
            f"HiRA cannot adapt the grouped convolution {module_name!r} (groups={description.extra['groups']}): "
            "W ⊙ BA needs BA shaped like the grouped weight. Leave it out of target_modules."
        )
    if description.kind == CONV and _padding_mode(target) != "zeros":
        raise TargetModulesError(f"HiRA adapts convolutions with zero padding only; {module_name!r} pads otherwise.")
    if description.kind == LINEAR:
        sync_fan_in_fan_out(config, description, module_name)
    layer = _LAYERS[description.kind](target, description)
    layer.update_layer(adapter_name, config, module_name=module_name, new_layer=True)
    return layer


def _padding_mode(target: nn.Module) -> str:
    from peft_core.layer import base_of

    return getattr(base_of(target), "padding_mode", "zeros")
