"""EVA for peft-core: LoRA's ``A`` from the principal directions of each layer's inputs."""

from .config import EvaConfig
from .eva import get_eva_state_dict, initialize_lora_eva_weights

__all__ = ["EvaConfig", "get_eva_state_dict", "initialize_lora_eva_weights"]
