"""IA³ for peft-core: config, layers and the plugin that registers them."""

from .config import IA3Config
from .layer import IA3Conv, IA3Layer, IA3Linear
from .model import IA3Model

__all__ = ["IA3Config", "IA3Conv", "IA3Layer", "IA3Linear", "IA3Model"]
