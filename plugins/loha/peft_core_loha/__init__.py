"""peft-core-loha: LoHa (low-rank Hadamard product) adapters as a peft-core plugin."""

from .config import LoHaConfig
from .layer import LoHaLayer

__all__ = ["LoHaConfig", "LoHaLayer"]
