"""P-tuning for peft-core: virtual tokens reparameterized by an MLP or a bidirectional LSTM."""

from .config import PromptEncoderConfig, PromptEncoderReparameterizationType
from .encoder import PromptEncoder

__all__ = ["PromptEncoder", "PromptEncoderConfig", "PromptEncoderReparameterizationType"]
