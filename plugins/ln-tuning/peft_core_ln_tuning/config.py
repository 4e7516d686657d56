"""``LNTuningConfig``: the field names, defaults and JSON of Hugging Face PEFT's LN tuning config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.targeting import check_target_fields

#: the normalisation layers LN tuning trains when no target_modules are given, by ``model.config.model_type``
#: (PEFT's table: for llava it also trains the projector, the token embedding and the head)
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    **dict.fromkeys(["llama", "mistral", "gemma"], ["input_layernorm", "post_attention_layernorm", "norm"]),
    **dict.fromkeys(["bloom", "falcon"], ["input_layernorm", "post_attention_layernorm", "ln_f"]),
    "llava": ["multi_modal_projector", "input_layernorm", "post_attention_layernorm", "norm", "embed_tokens", "lm_head"],
    **dict.fromkeys(["t5", "mt5"], ["layer_norm", "final_layer_norm"]),
    "bart": ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"],
    "gpt2": ["ln_1", "ln_2", "ln_f"],
    "blip-2": ["layernorm", "LayerNorm", "final_layer_norm", "self_attn_layer_norm"],
    "gptj": ["ln_1", "ln_f"],
    "phi": ["input_layernorm", "final_layernorm"],
    **dict.fromkeys(["gemma2", "gemma3_text"], ["input_layernorm", "post_attention_layernorm",
                                                "pre_feedforward_layernorm", "post_feedforward_layernorm", "norm"]),
    **dict.fromkeys(["qwen2", "qwen3"], ["post_attention_layernorm"]),
}


@dataclass
class LNTuningConfig(PeftConfig):
    """LN tuning: each targeted layer (normally a LayerNorm/RMSNorm) is replaced by a trained copy of itself."""

    peft_type: Optional[str] = "LN_TUNING"
    target_modules: Optional[Union[list[str], set[str], str]] = None
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    modules_to_save: Optional[Union[list[str], str]] = None

    #: norms above all; PEFT copies whatever it is pointed at (its llava defaults include linears and an embedding)
    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("norm", "linear", "embedding", "conv")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "LN_TUNING"
        check_target_fields(self, ("target_modules", "exclude_modules"))
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = [self.modules_to_save]

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")
