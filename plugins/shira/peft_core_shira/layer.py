"""SHiRA layers: ``result + Δ x`` where ``Δ`` is zero except at a fixed set of trained entries.

Per adapter the layer holds the trained values (``shira_weight``, ``(n,)``, a parameter) and
where they sit (``shira_indices``, ``(2, n)`` int32 row/column pairs, fixed, not trained).
Both are saved — the indices under ``<module>.shira_indices`` like PEFT — so an adapter built
from any mask, random or custom, loads with the same entries. A layer built without a mask
function (a custom ``mask_type`` being loaded) starts with placeholder indices (``-1``) that
the load fills in; using it before that is a clear error.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft_core.errors import ConfigError, TargetModulesError
from peft_core.layer import AdapterLayer, base_of
from peft_core.lowrank import sync_fan_in_fan_out
from peft_core.weights import LINEAR, LayerDescription

from .masks import mask_to_indices, shira_size


class ShiraLinear(AdapterLayer):
    """SHiRA on ``nn.Linear``."""

    method = "SHIRA"
    adapter_layer_names = ("shira_weight",)
    other_param_names = ("r", "scaling", "shira_indices")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.shira_weight = nn.ParameterDict()
        #: adapters whose indices are placeholders until a saved adapter is loaded into them
        self.__dict__["_awaiting_indices"] = set()

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        d, r = self.description, config.r
        size = shira_size(d.in_features, d.out_features, r)
        if size > d.in_features * d.out_features:
            raise TargetModulesError(
                f"SHiRA rank r={r} asks for {size} trained entries in {module_name!r}, which has only "
                f"{d.in_features * d.out_features} ({d.out_features} × {d.in_features}); lower r."
            )
        if config.mask_fn is not None:
            options: dict[str, Any] = {"bias": getattr(base_of(self.base_layer), "bias", None) is not None}
            if config.mask_type == "random":
                options["random_seed"] = config.random_seed
            indices = mask_to_indices(config.mask_fn(base_of(self.base_layer), r, **options), size, module_name)
            self._awaiting_indices.discard(adapter_name)
        else:
            indices = torch.full((2, size), -1, dtype=torch.int32)
            self._awaiting_indices.add(adapter_name)
        self.r[adapter_name] = r
        self.scaling[adapter_name] = 1.0
        self.shira_indices[adapter_name] = indices
        values = torch.zeros(size) if config.init_weights else torch.randn(size)
        self.shira_weight[adapter_name] = nn.Parameter(values)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._awaiting_indices.discard(adapter_name)

    def set_scale(self, adapter_name: str, scale: float) -> None:
        """Scale an adapter's values at inference (1.0 while training), as PEFT's ``set_scale``."""
        if adapter_name in self.scaling:
            self.scaling[adapter_name] = scale

    # -- saving and loading the indices ----------------------------------------------------

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        out = super().adapter_state_dict(adapter_name)
        if adapter_name in self.shira_indices:
            out["shira_indices"] = self.shira_indices[adapter_name]
        return out

    def _indices(self, adapter_name: str) -> torch.Tensor:
        indices = self.shira_indices[adapter_name]
        if adapter_name in self._awaiting_indices:
            if bool((indices < 0).any()):
                raise ConfigError(
                    f"SHiRA adapter {adapter_name!r} has no mask: its mask_type is not 'random' and no mask_fn was "
                    "set. Set `config.mask_fn` before adding the adapter, or load a saved adapter into it."
                )
            self._awaiting_indices.discard(adapter_name)
        return indices

    # -- the update -----------------------------------------------------------------------

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        values = self.shira_weight[adapter_name] * self.scaling[adapter_name]
        rows, cols = self._indices(adapter_name).to(values.device, torch.long)
        d = self.description
        return values.new_zeros(d.out_features, d.in_features).index_put((rows, cols), values)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        delta = self.get_delta_weight(adapter_name)
        return result + F.linear(x.to(delta.dtype), delta).to(result.dtype)


def create_shira_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> ShiraLinear:
    """The ``MethodSpec.layer_factory`` of SHiRA: ``nn.Linear`` only, as in PEFT."""
    if description.kind != LINEAR or description.fan_in_fan_out:
        what = "a Conv1D (transposed) layer" if description.kind == LINEAR else f"a {description.kind} layer"
        raise TargetModulesError(f"SHiRA cannot adapt {module_name!r}, {what}; it adapts nn.Linear layers only.")
    sync_fan_in_fan_out(config, description, module_name)
    layer = ShiraLinear(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
