"""AdaLoRA for peft-core: config, SVD-form layer, rank allocator and the plugin that registers them."""

from .allocator import RankAllocator, update_and_allocate
from .config import AdaLoraConfig
from .layer import AdaLoraLinear
from .model import AdaLoraModel

__all__ = ["AdaLoraConfig", "AdaLoraLinear", "AdaLoraModel", "RankAllocator", "update_and_allocate"]
