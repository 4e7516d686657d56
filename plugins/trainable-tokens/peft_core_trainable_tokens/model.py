"""``TrainableTokensModel``: PEFT's name for the tuner, kept so existing code that names it works."""

from __future__ import annotations

from peft_core.tuner import AdapterModel


class TrainableTokensModel(AdapterModel):
    """The generic tuner under trainable tokens' name; everything lives in :class:`~peft_core.tuner.AdapterModel`."""
