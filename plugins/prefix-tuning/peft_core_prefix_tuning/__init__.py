"""Prefix tuning for peft-core: learned key/value prefixes for every attention layer."""

from .config import PrefixTuningConfig
from .encoder import PrefixEncoder

__all__ = ["PrefixEncoder", "PrefixTuningConfig"]
