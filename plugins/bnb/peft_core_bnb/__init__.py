"""bitsandbytes 4-bit and 8-bit base layers for peft-core: QLoRA and every other layer method.

Installing this plugin is all it takes: the core finds it through the ``peft_core`` entry
point and asks it about ``Linear4bit``/``Linear8bitLt`` layers. The functions here are the
extras a user may call directly.
"""

from .dequant import dequantize_model, is_quantized_model
from .quant import bnb_kind

__all__ = ["bnb_kind", "dequantize_model", "is_quantized_model"]
