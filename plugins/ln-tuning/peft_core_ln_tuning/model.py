"""``LNTuningModel``: PEFT's name for the tuner, kept so ``LNTuningModel(model, config, "default")`` works."""

from __future__ import annotations

from peft_core.tuner import AdapterModel


class LNTuningModel(AdapterModel):
    """The generic tuner under LN tuning's name; everything lives in :class:`~peft_core.tuner.AdapterModel`."""
