"""Prompt tuning for peft-core: learned virtual-token embeddings prepended to the input."""

from .config import PromptTuningConfig, PromptTuningInit
from .encoder import PromptEmbedding

__all__ = ["PromptEmbedding", "PromptTuningConfig", "PromptTuningInit"]
