"""peft-core-boft: butterfly orthogonal fine-tuning (BOFT) as a peft-core plugin."""

from .config import BOFTConfig

__all__ = ["BOFTConfig"]
