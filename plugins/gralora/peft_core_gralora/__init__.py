"""GraLoRA for peft-core: config, layer and the plugin that registers them."""

from .config import GraloraConfig
from .layer import GraloraLinear

__all__ = ["GraloraConfig", "GraloraLinear"]
