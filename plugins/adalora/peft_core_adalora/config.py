"""``AdaLoraConfig``: Hugging Face PEFT's AdaLoRA fields, defaults and JSON.

In PEFT the AdaLoRA config extends the LoRA config, so the JSON it writes carries every
LoRA field too; subclassing :class:`peft_core_lora.LoraConfig` keeps that for free (and
LoRA's own validation — unsupported extensions, Conv1D's ``fan_in_fan_out`` — applies).
``rank_pattern`` means something else here: not ranks per module but, per module, which
of the ``init_r`` singular triplets survived the budget allocation (a list of booleans,
keyed ``<module path>.lora_E``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Optional

from peft_core.errors import ConfigError
from peft_core_lora.config import LoraConfig

#: modules AdaLoRA adapts when ``target_modules`` is not given, by ``model.config.model_type``
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "t5": ["q", "k", "v", "o", "wi", "wo"],
    "mt5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
    **dict.fromkeys(["bart", "opt"], ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]),
    **dict.fromkeys(["gpt2", "gpt_bigcode"], ["c_attn"]),
    **dict.fromkeys(["bloom", "gpt_neox"], ["query_key_value"]),
    **dict.fromkeys(["gptj", "gpt_neo", "llama", "llama4", "gemma", "gemma2", "gemma3_text", "qwen2", "qwen3"],
                    ["q_proj", "v_proj"]),
    "bert": ["query", "value"],
    "roberta": ["query", "key", "value", "dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    "deberta": ["in_proj"],
    "nemotron_h": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


@dataclass
class AdaLoraConfig(LoraConfig):
    """AdaLoRA: SVD-form adapters ``B diag(E) A`` whose total rank is pruned to a budget while training.

    Three phases over ``total_step`` steps: ``tinit`` warm-up steps at ``init_r`` per module,
    a cubic decrease of the total budget to ``target_r`` per module (re-allocated every
    ``deltaT`` steps by sensitivity scores smoothed with ``beta1``/``beta2``), then ``tfinal``
    steps at the final allocation. ``orth_reg_weight`` weighs the penalty keeping A's rows
    and B's columns orthonormal. ``r`` is unused (``init_r`` is the starting rank).
    """

    peft_type: Optional[str] = "ADALORA"
    target_r: int = 8
    init_r: int = 12
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: Optional[int] = None
    rank_pattern: Optional[dict] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        # LoRA's checks read rank_pattern as ranks; ours holds masks, checked below
        pattern, self.rank_pattern = self.rank_pattern, None
        super().__post_init__()
        self.rank_pattern = pattern
        self.peft_type = "ADALORA"
        if self.use_dora:
            raise ConfigError("AdaLoRA does not support DoRA (use_dora=True); use LoraConfig for DoRA.")
        if self.loftq_config:
            raise ConfigError("AdaLoRA does not support LoftQ initialisation (loftq_config).")
        if self.r != 8:
            warnings.warn("AdaLoraConfig ignores r; set init_r for the starting rank.", UserWarning, stacklevel=3)
        for name in ("init_r", "target_r", "tinit", "tfinal", "deltaT"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name in ("init_r", "deltaT") else 0):
                raise ConfigError(f"{name} must be a {'positive' if name in ('init_r', 'deltaT') else 'non-negative'} "
                                  f"integer, got {value!r}.")
        if isinstance(self.total_step, bool) or not isinstance(self.total_step, int) or self.total_step <= 0:
            raise ConfigError(f"AdaLoRA needs total_step, the number of training steps (> 0); got {self.total_step!r}.")
        if self.tinit >= self.total_step - self.tfinal:
            raise ConfigError(
                f"tinit={self.tinit} + tfinal={self.tfinal} leave no budgeting phase within total_step="
                f"{self.total_step}; decrease tinit/tfinal or increase total_step."
            )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ConfigError(f"{name} must be in (0, 1) (an EMA coefficient), got {value!r}.")
        if isinstance(self.orth_reg_weight, bool) or not isinstance(self.orth_reg_weight, (int, float)) \
                or self.orth_reg_weight < 0:
            raise ConfigError(f"orth_reg_weight must be a number >= 0, got {self.orth_reg_weight!r}.")
        if self.rank_pattern is not None:
            if not isinstance(self.rank_pattern, dict) or not all(
                    isinstance(v, (list, tuple)) and all(isinstance(b, bool) for b in v) for v in self.rank_pattern.values()):
                raise ConfigError("rank_pattern must map '<module>.lora_E' to a list of booleans (kept triplets); "
                                  f"got {self.rank_pattern!r:.120}.")

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")
