"""``AdaLoraModel``: PEFT's name for the tuner, with ``update_and_allocate`` as a real method."""

from __future__ import annotations

from peft_core.tuner import AdapterModel

from .allocator import update_and_allocate as _update_and_allocate


class AdaLoraModel(AdapterModel):
    """The generic tuner under AdaLoRA's name (``model.base_model`` of any AdaLoRA model has the same methods)."""

    def update_and_allocate(self, global_step: int) -> None:
        """Update sensitivities and re-allocate ranks; call after ``backward()``, before ``zero_grad()``."""
        _update_and_allocate(self, global_step)
