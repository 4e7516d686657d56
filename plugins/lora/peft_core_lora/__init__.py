"""LoRA for peft-core: config, layers and the plugin that registers them."""

from .config import LoraConfig
from .layer import LoraConv, LoraEmbedding, LoraLayer, LoraLinear
from .model import LoraModel

__all__ = ["LoraConfig", "LoraConv", "LoraEmbedding", "LoraLayer", "LoraLinear", "LoraModel"]
