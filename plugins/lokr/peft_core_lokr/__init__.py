"""peft-core-lokr: LoKr (low-rank Kronecker product) adapters as a peft-core plugin."""

from .config import LoKrConfig
from .layer import LoKrLayer

__all__ = ["LoKrConfig", "LoKrLayer"]
