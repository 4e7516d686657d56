"""CorDA for peft-core: LoRA factors from an SVD of the weight weighted by its inputs' covariance."""

from .config import CordaConfig
from .corda import preprocess_corda

__all__ = ["CordaConfig", "preprocess_corda"]
