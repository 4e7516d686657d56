"""SHiRA for peft-core: config, mask functions, layer and the plugin that registers them."""

from .config import ShiraConfig
from .layer import ShiraLinear
from .masks import random_mask

__all__ = ["ShiraConfig", "ShiraLinear", "random_mask"]
