"""MiSS for peft-core: config, layer and the plugin that registers them."""

from .config import MissConfig
from .layer import MissLinear

__all__ = ["MissConfig", "MissLinear"]
