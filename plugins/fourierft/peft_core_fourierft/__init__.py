"""FourierFT for peft-core: config, layer and the plugin that registers them."""

from .config import FourierFTConfig
from .layer import FourierFTLayer, spectral_positions
from .plugin import FourierFTModel

__all__ = ["FourierFTConfig", "FourierFTLayer", "FourierFTModel", "spectral_positions"]
