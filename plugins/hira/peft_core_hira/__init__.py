"""HiRA for peft-core: config, layers and the plugin that registers them."""

from .config import HiraConfig
from .layer import HiraConv, HiraEmbedding, HiraLayer, HiraLinear

__all__ = ["HiraConfig", "HiraConv", "HiraEmbedding", "HiraLayer", "HiraLinear"]
