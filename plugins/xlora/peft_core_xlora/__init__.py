"""X-LoRA for peft-core: ``get_peft_model(model, XLoraConfig(adapters={...}))`` mixes saved LoRA experts."""

from .config import XLoraConfig
from .model import XLoraModel

__all__ = ["XLoraConfig", "XLoraModel"]
