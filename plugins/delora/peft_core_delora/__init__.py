"""DeLoRA for peft-core: config, layer and the plugin that registers them."""

from .config import DeloraConfig
from .layer import DeloraLayer
from .plugin import DeloraModel

__all__ = ["DeloraConfig", "DeloraLayer", "DeloraModel"]
