"""LoRA initialisations for peft-core: PiSSA, OLoRA, orthogonal and LoftQ (``LoraConfig(init_lora_weights=...)``)."""

from .conversion import convert_to_plain_lora
from .loftq import LoftQConfig, loftq_decompose, replace_lora_weights_loftq

__all__ = ["LoftQConfig", "convert_to_plain_lora", "loftq_decompose", "replace_lora_weights_loftq"]
