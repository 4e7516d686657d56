"""``modules_to_save``: a trainable full copy of a module per adapter.

Classifier heads of sequence classification models are the usual case: the head is new
(randomly initialised) so it must be trained and saved with the adapter. The wrapper keeps
the original module untouched and routes calls to the active adapter's copy. On disk the
copy is stored under the module's original name (``base_model.model.score.weight``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import AdapterNameError


class ModulesToSaveWrapper(nn.Module):
    def __init__(self, module_to_save: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self.original_module = module_to_save
        self.modules_to_save = nn.ModuleDict()
        self._active_adapter: str | None = None
        self._disable_adapters = False
        self._routing: Any = None  # a peft_core.routing.RoutingPlan during a mixed-batch forward
        self.update(adapter_name)

    def update(self, adapter_name: str) -> None:
        """Add a trainable copy for ``adapter_name`` (made from the original module)."""
        clone = copy.deepcopy(self.original_module)
        clone.requires_grad_(True)
        self.modules_to_save[adapter_name] = clone
        self.original_module.requires_grad_(False)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.modules_to_save.keys())

    @property
    def active_adapter(self) -> str | None:
        return self._active_adapter

    def _current(self) -> nn.Module:
        if self._disable_adapters or self._active_adapter not in self.modules_to_save:
            return self.original_module
        return self.modules_to_save[self._active_adapter]

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if self._routing is None or self._disable_adapters:
            return self._current()(x, *args, **kwargs)
        result = self.original_module(x, *args, **kwargs)
        for name, rows in self._routing.for_rows(x.shape[0], x.device):
            if name in self.modules_to_save:
                sub = self.modules_to_save[name](x.index_select(0, rows), *args, **kwargs)
                result = result.index_copy(0, rows, sub.to(result.dtype))
        return result

    def set_adapter(self, adapter_names: str | Sequence[str], trainable: dict[str, bool] | None = None) -> None:
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        present = [n for n in names if n in self.modules_to_save]
        if len(present) > 1:
            raise AdapterNameError(
                f"adapters {present} each have their own copy of this module (modules_to_save); "
                "only one of them can be active at a time."
            )
        self._active_adapter = present[0] if present else None
        for name, module in self.modules_to_save.items():
            module.requires_grad_(name == self._active_adapter and (trainable or {}).get(name, True))

    def enable_adapters(self, enabled: bool) -> None:
        self._disable_adapters = not enabled

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.modules_to_save:
            del self.modules_to_save[adapter_name]
        if self._active_adapter == adapter_name:
            self._active_adapter = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in {"original_module", "modules_to_save"}:
                raise
            return getattr(self._current(), name)
