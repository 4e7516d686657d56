"""LN tuning for peft-core: config, layer and the plugin that registers them."""

from .config import LNTuningConfig
from .layer import LNTuningLayer
from .model import LNTuningModel

__all__ = ["LNTuningConfig", "LNTuningLayer", "LNTuningModel"]
