"""peft-core-oft: orthogonal fine-tuning (OFT) as a peft-core plugin."""

from .config import OFTConfig

__all__ = ["OFTConfig"]
