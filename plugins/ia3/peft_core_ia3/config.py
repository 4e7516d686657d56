"""``IA3Config``: the field names, defaults and JSON of Hugging Face PEFT's IA³ config.

``layers_to_transform``/``layers_pattern`` are extras PEFT's IA³ config does not have; they
are left out of ``adapter_config.json`` while unset, so a default config file is exactly
what PEFT writes and reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.targeting import check_target_fields

#: (target_modules, feedforward_modules) IA³ adapts when none are given, by ``model.config.model_type``.
#: Attention keys/values get output scaling, the second feed-forward projection input scaling.
DEFAULT_MODULES: dict[str, tuple[list[str], list[str]]] = {
    **dict.fromkeys(["llama", "mistral"], (["k_proj", "v_proj", "down_proj"], ["down_proj"])),
    **dict.fromkeys(["llama4", "gemma", "gemma2", "gemma3_text", "qwen2", "qwen3"],
                    (["q_proj", "v_proj", "down_proj"], ["down_proj"])),
    "mixtral": (["k_proj", "v_proj", "w2"], ["w2"]),
    "t5": (["k", "v", "wo"], ["wo"]),
    "mt5": (["k", "v", "wi_1"], []),
    **dict.fromkeys(["gpt2", "gpt_bigcode"], (["c_attn", "mlp.c_proj"], ["mlp.c_proj"])),
    "bloom": (["query_key_value", "mlp.dense_4h_to_h"], ["mlp.dense_4h_to_h"]),
    **dict.fromkeys(["bert", "roberta"], (["key", "value", "output.dense"], ["output.dense"])),
    "deberta-v2": (["key_proj", "value_proj", "output.dense"], ["output.dense"]),
    "deberta": (["in_proj", "output.dense"], ["output.dense"]),
    "opt": (["q_proj", "k_proj", "fc2"], ["fc2"]),
    "bart": (["q_proj", "v_proj", "fc2"], ["fc2"]),
    "phi": (["q_proj", "v_proj", "fc2"], ["fc2"]),
    "gptj": (["q_proj", "v_proj", "fc_out"], ["fc_out"]),
    "gpt_neo": (["q_proj", "v_proj", "c_proj"], ["c_proj"]),
    **dict.fromkeys(["gpt_neox", "falcon", "RefinedWeb", "RefinedWebModel"],
                    (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"])),
}

#: extras written to adapter_config.json only when set (PEFT's IA3Config has no such fields)
_OPTIONAL_FIELDS = ("layers_to_transform", "layers_pattern")


@dataclass
class IA3Config(PeftConfig):
    """IA³: learned vectors rescale activations — inputs of ``feedforward_modules``, outputs of other targets."""

    peft_type: Optional[str] = "IA3"
    target_modules: Optional[Union[list[str], set[str], str]] = None
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    feedforward_modules: Optional[Union[list[str], set[str], str]] = None
    fan_in_fan_out: bool = False
    modules_to_save: Optional[list[str]] = None
    init_ia3_weights: bool = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear", "conv")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "IA3"
        check_target_fields(self, ("target_modules", "exclude_modules", "feedforward_modules"))
        for name in ("fan_in_fan_out", "init_ia3_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if isinstance(self.feedforward_modules, set) and isinstance(self.target_modules, set):
            extra = self.feedforward_modules - self.target_modules
            if extra:
                raise ConfigError(
                    f"feedforward_modules must be a subset of target_modules; {sorted(extra)} are not targeted. "
                    "Add them to target_modules or remove them from feedforward_modules."
                )

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        entry = DEFAULT_MODULES.get(model_type or "")
        return list(entry[0]) if entry else None

    def default_feedforward_modules(self, model_type: str | None) -> list[str] | None:
        entry = DEFAULT_MODULES.get(model_type or "")
        return list(entry[1]) if entry else None

    def is_feedforward(self, module_name: str) -> bool:
        """Whether the targeted module ``module_name`` gets input scaling (PEFT's rule).

        A regex must match the full name; a list entry matches when the name ends with it.
        """
        ff = self.feedforward_modules
        if not ff:
            return False
        if isinstance(ff, str):
            return re.fullmatch(ff, module_name) is not None
        return any(module_name.endswith(key) for key in ff)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for name in _OPTIONAL_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data
