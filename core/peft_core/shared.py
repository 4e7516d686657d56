"""Per-adapter tensors that belong to the whole model rather than to one layer.

VeRA draws one pair of frozen random projections per adapter and every VeRA layer slices
them; PEFT keeps them once, on the tuner, and saves them under tuner-level keys
(``base_model.vera_A``) instead of under a module path. :class:`SharedTensors` is that place
here: the tuner owns one (``AdapterModel.shared_tensors``), methods fill it from
``MethodSpec.init_shared`` once an adapter's layers are in place, the serializer saves the
persistent entries under ``base_model.<name>`` and loads them back, and deleting the adapter
drops them. Living in the module tree, the tensors follow ``.to()`` like any buffer.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import AdapterNameError

#: where tuner-level tensors are saved: ``base_model.<name>`` (PEFT's layout)
TUNER_DISK_PREFIX = "base_model."


class _ByAdapter(nn.Module):
    """One tensor name's entries: a buffer per adapter, persistent or not."""


class SharedTensors(nn.Module):
    """``(name, adapter) -> tensor`` held once per model; persistent entries are saved with the adapter.

    A child module per tensor name keeps the model's state-dict keys readable
    (``base_model.shared_tensors.vera_A.<adapter>``). Non-persistent entries (VeRA with
    ``save_projection=False``) are rebuilt by the method from the config when loading, so
    they are neither in the state dict nor in the adapter file.
    """

    def add(self, name: str, adapter_name: str, tensor: torch.Tensor, persistent: bool = True) -> None:
        """Store (or replace) ``tensor`` as ``name`` of ``adapter_name``; frozen, detached."""
        if name not in self._modules:
            self.add_module(name, _ByAdapter())
        holder = self._modules[name]
        if adapter_name in holder._buffers:
            delattr(holder, adapter_name)
        holder.register_buffer(adapter_name, tensor.detach(), persistent=persistent)

    def get(self, name: str, adapter_name: str) -> torch.Tensor:
        holder = self._modules.get(name)
        if holder is None or adapter_name not in holder._buffers:
            raise AdapterNameError(f"adapter {adapter_name!r} has no shared tensor {name!r}; it was never "
                                   "created for this adapter (add the adapter through the tuner, not layer by layer).")
        return holder._buffers[adapter_name]

    def has(self, name: str, adapter_name: str) -> bool:
        holder = self._modules.get(name)
        return holder is not None and adapter_name in holder._buffers

    def saved(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """The adapter's persistent tensors by name: what its adapter file holds."""
        return {
            name: holder._buffers[adapter_name]
            for name, holder in self._modules.items()
            if adapter_name in holder._buffers and adapter_name not in holder._non_persistent_buffers_set
        }

    def delete_adapter(self, adapter_name: str) -> None:
        """Drop every tensor of ``adapter_name``; empty name holders go too."""
        for name, holder in list(self._modules.items()):
            if adapter_name in holder._buffers:
                delattr(holder, adapter_name)
            if not holder._buffers:
                delattr(self, name)
