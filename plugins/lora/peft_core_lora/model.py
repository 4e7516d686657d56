"""``LoraModel``: PEFT's name for the tuner, kept so ``LoraModel(model, config, "default")`` works."""

from __future__ import annotations

from peft_core.tuner import AdapterModel


class LoraModel(AdapterModel):
    """The generic tuner under LoRA's name; everything lives in :class:`~peft_core.tuner.AdapterModel`."""
