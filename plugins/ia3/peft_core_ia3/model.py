"""``IA3Model``: PEFT's name for the tuner, kept so ``IA3Model(model, config, "default")`` works."""

from __future__ import annotations

from peft_core.tuner import AdapterModel


class IA3Model(AdapterModel):
    """The generic tuner under IA³'s name; everything lives in :class:`~peft_core.tuner.AdapterModel`."""
