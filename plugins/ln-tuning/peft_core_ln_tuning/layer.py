"""The LN tuning layer: a trained copy of the wrapped module runs in its place.

An adapter is a deep copy of the base module (``ln_tuning_layers[<adapter>]``), trained while the
original stays frozen; the forward runs the active adapter's copy *instead of* the base module.
Merging therefore swaps modules rather than adding a delta: the copy becomes ``base_layer`` and
the original waits in the adapter's slot until ``unmerge`` swaps them back. Only one adapter can
stand in for a module at a time, so several active adapters are refused, and one merged adapter
must be unmerged before another is merged (done automatically, as PEFT does).

Copies follow the core's dtype rule (fp32 over a half-precision base with
``autocast_adapter_dtype``); inputs are cast to the copy's dtype and outputs back, and a merge
casts the copy to the base's dtype, since the merged model runs at the base's precision.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from peft_core.errors import MergeError, UnsupportedOperation
from peft_core.layer import AdapterLayer
from peft_core.weights import LayerDescription, dense_weight


def _float_dtype(module: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


class LNTuningLayer(AdapterLayer):
    """Holds a trained copy of the base module per adapter; the active one replaces the base in the forward."""

    method = "LN_TUNING"
    adapter_layer_names = ("ln_tuning_layers",)

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.ln_tuning_layers = nn.ModuleDict()
        self.__dict__["_copy_dtypes"] = {}  # dtype each merged copy had before the merge cast it

    def update_layer(self, adapter_name: str, config: Any, **kwargs: Any) -> None:
        if self.merged:
            raise MergeError(f"cannot add adapter {adapter_name!r} while {self.merged_adapters} is merged here: the copy "
                             "would be taken of the merged adapter, not of the original module; unmerge first.")
        self.ln_tuning_layers[adapter_name] = copy.deepcopy(self.base_layer)

    # -- forward --------------------------------------------------------------------------

    def run_copy(self, adapter_name: str, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The adapter's copy on ``x``, at the copy's precision, returned at the base's."""
        module = self.ln_tuning_layers[adapter_name]
        dtype = _float_dtype(module)
        out_dtype = x.dtype if x.is_floating_point() else self.description.dtype
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype)
        out = module(x, *args, **kwargs)
        return out.to(out_dtype) if out.is_floating_point() else out

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._disable_adapters or self._routing is not None or self.merged or not self._active_adapters:
            return super().forward(x, *args, **kwargs)
        if len(self._active_adapters) > 1:
            raise UnsupportedOperation(f"LN tuning runs one adapter at a time; {self._active_adapters} are active here.")
        return self.run_copy(self._active_adapters[0], x, *args, **kwargs)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """Rows of a mixed batch: the copy replaces the base output for its rows."""
        return self.run_copy(adapter_name, x).to(result.dtype)

    # -- merging: a swap ------------------------------------------------------------------

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """What the base weight becomes when merged: the copy's (used to check a safe merge)."""
        return dense_weight(self.ln_tuning_layers[adapter_name]).to(weight.dtype)

    def merged_bias(self, adapter_name: str) -> torch.Tensor | None:
        bias = getattr(self.ln_tuning_layers[adapter_name], "bias", None)
        return None if bias is None else bias.detach()

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """Copy minus base weight: for inspection only (merging swaps modules)."""
        base = dense_weight(self.base_layer)
        return self.merged_weight(base, adapter_name) - base

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        names = [n for n in (self._active_adapters if adapter_names is None else adapter_names)
                 if n not in self.merged_adapters]
        if not names:
            return
        if len(names) > 1:
            raise MergeError(f"LN tuning merges one adapter at a time (asked for {names}): each would replace the "
                             "same module.")
        name = names[0]
        if name not in self.ln_tuning_layers:
            raise MergeError(f"adapter {name!r} is not in this layer (it holds {self.adapter_names}).")
        module = self.ln_tuning_layers[name]
        if safe_merge and not all(torch.isfinite(p).all() for p in module.parameters()):
            raise MergeError(f"adapter {name!r} has NaN/inf parameters; nothing was merged.")
        if self.merged_adapters:  # another adapter stands in: put the original back first
            self.unmerge()
        self._copy_dtypes[name] = _float_dtype(module)
        if self._copy_dtypes[name] not in (None, self.description.dtype):
            module.to(dtype=self.description.dtype)
        self.base_layer, self.ln_tuning_layers[name] = module, self.base_layer
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            module = self.base_layer
            self.base_layer, self.ln_tuning_layers[name] = self.ln_tuning_layers[name], module
            dtype = self._copy_dtypes.pop(name, None)
            if dtype is not None and dtype != _float_dtype(module):
                module.to(dtype=dtype)

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """While merged, the adapter's trained copy is ``base_layer``: save that, not the original in its slot."""
        if adapter_name in self.merged_adapters:
            return {f"ln_tuning_layers.{k}": v for k, v in self.base_layer.state_dict(keep_vars=True).items()}
        return super().adapter_state_dict(adapter_name)

    def adapter_parameters(self, adapter_name: str) -> list[nn.Parameter]:
        if adapter_name in self.merged_adapters:
            return list(self.base_layer.parameters())
        return super().adapter_parameters(adapter_name)


def create_ln_tuning_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> LNTuningLayer:
    """The ``MethodSpec.layer_factory`` of LN tuning."""
    layer = LNTuningLayer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
