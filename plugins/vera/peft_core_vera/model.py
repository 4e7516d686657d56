"""``VeraModel``: PEFT's name for the tuner, kept so ``VeraModel(model, config, "default")`` works."""

from __future__ import annotations

from peft_core.tuner import AdapterModel


class VeraModel(AdapterModel):
    """The generic tuner under VeRA's name; the projections live in ``shared_tensors``."""
