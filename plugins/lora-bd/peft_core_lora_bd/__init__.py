"""Block-diagonal LoRA for peft-core: ``LoraConfig(use_bdlora=BdLoraConfig(...))``."""

from .config import BdLoraConfig
from .variant import BdLoraVariant, BlockDiagonalLinear

__all__ = ["BdLoraConfig", "BdLoraVariant", "BlockDiagonalLinear"]
