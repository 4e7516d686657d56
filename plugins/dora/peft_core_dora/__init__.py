"""DoRA for peft-core: ``LoraConfig(use_dora=True)`` once this package is installed."""

from .variant import DoraVariant

__all__ = ["DoraVariant"]
