"""VeRA for peft-core: config, layer, shared projections and the plugin that registers them."""

from .config import VeraConfig
from .layer import VeraLinear
from .model import VeraModel
from .projections import projection_pair

__all__ = ["VeraConfig", "VeraLinear", "VeraModel", "projection_pair"]
