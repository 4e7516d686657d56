"""Trainable tokens for peft-core: only selected rows of an embedding matrix are trained."""

from .config import TrainableTokensConfig
from .layer import TrainableTokensLayer
from .model import TrainableTokensModel

__all__ = ["TrainableTokensConfig", "TrainableTokensLayer", "TrainableTokensModel"]
