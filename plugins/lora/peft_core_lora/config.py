"""``LoraConfig``: the field names, defaults and JSON of Hugging Face PEFT's LoRA config.

Every field PEFT writes is here so configs round-trip in both directions. Fields that
select LoRA extensions this plugin does not implement are accepted when read (so a
config never fails to parse) but rejected, with the reason, when an adapter is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.lowrank import LORA_FAMILY_TARGET_MODULES
from peft_core.targeting import check_target_fields

#: Module names LoRA adapts when ``target_modules`` is not given, by ``model.config.model_type``
#: (the LoRA-family table in the core, which HiRA, GraLoRA, MiSS and SHiRA share).
DEFAULT_TARGET_MODULES: dict[str, list[str]] = LORA_FAMILY_TARGET_MODULES

BASIC_INITS = (True, False, "gaussian")

#: fields whose non-default values need LoRA extensions this plugin does not provide
_UNSUPPORTED: dict[str, Any] = {
    "megatron_config": None,
    "trainable_token_indices": None,
    "eva_config": None,
    "corda_config": None,
    "lora_ga_config": None,
    "velora_config": None,
    "alora_invocation_tokens": None,
    "use_qalora": False,
    "monteclora_config": None,
    "layer_replication": None,
    "target_parameters": None,
    "use_bdlora": None,
    "arrow_config": None,
    "kasa_config": None,
    "ensure_weight_tying": False,
}


@dataclass
class LoraConfig(PeftConfig):
    """LoRA: ``W x + (lora_alpha / r) · B A x`` on the targeted modules (``/ sqrt(r)`` with rsLoRA)."""

    peft_type: Optional[str] = "LORA"
    r: int = 8
    target_modules: Optional[Union[list[str], set[str], str]] = None
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    modules_to_save: Optional[list[str]] = None
    init_lora_weights: Union[bool, str] = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    rank_pattern: Optional[dict] = field(default_factory=dict)
    alpha_pattern: Optional[dict] = field(default_factory=dict)
    megatron_config: Optional[dict] = None
    megatron_core: Optional[str] = "megatron.core"
    trainable_token_indices: Optional[Union[list[int], dict]] = None
    loftq_config: Union[dict, Any] = field(default_factory=dict)
    eva_config: Optional[Any] = None
    corda_config: Optional[Any] = None
    lora_ga_config: Optional[Any] = None
    use_dora: bool = False
    velora_config: Optional[Any] = None
    alora_invocation_tokens: Optional[list[int]] = None
    use_qalora: bool = False
    qalora_group_size: int = 16
    monteclora_config: Optional[Any] = None
    layer_replication: Optional[list] = None
    lora_bias: bool = False
    target_parameters: Optional[list[str]] = None
    use_bdlora: Optional[Any] = None
    arrow_config: Optional[Any] = None
    kasa_config: Optional[Any] = None
    ensure_weight_tying: bool = False

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear", "conv", "embedding")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "LORA"
        check_target_fields(self)
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"r must be a positive integer (the adapter rank), got {self.r!r}.")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)):
            raise ConfigError(f"lora_alpha must be a number, got {self.lora_alpha!r}.")
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if self.lora_bias and not isinstance(self.init_lora_weights, bool):
            # Hugging Face PEFT refuses this pair when the config is made; a config it cannot read is not saved
            raise ConfigError(f"lora_bias=True works with init_lora_weights=True or False, got "
                              f"init_lora_weights={self.init_lora_weights!r}; drop lora_bias or use the default init.")
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"bias must be 'none', 'all' or 'lora_only', got {self.bias!r}.")
        for name, pattern in (("rank_pattern", self.rank_pattern), ("alpha_pattern", self.alpha_pattern)):
            if pattern is not None and not isinstance(pattern, dict):
                raise ConfigError(f"{name} must be a dict of module-name pattern -> value, got {pattern!r}.")
        for key, r in (self.rank_pattern or {}).items():
            if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
                raise ConfigError(f"rank_pattern[{key!r}] must be a positive integer, got {r!r}.")
        if self.loftq_config is None:
            self.loftq_config = {}

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")

    def unsupported_fields(self, fields: Iterable[str] = (), inits: Iterable[str] = ()) -> list[str]:
        """Problems with fields that need LoRA extensions not installed or not implemented.

        ``fields`` and ``inits`` are what installed extension plugins serve (see the LoRA
        plugin's ``peft_core_lora_extensions`` hook).
        """
        served = set(fields)
        problems = [
            f"{name}={getattr(self, name)!r} is not supported by the installed LoRA plugins"
            for name, default in _UNSUPPORTED.items()
            if name not in served and getattr(self, name) not in (default, {}, [])
        ]
        if "loftq_config" not in served and self.loftq_config not in ({}, None):
            problems.append("loftq_config is not supported by the installed LoRA plugins")
        if not init_is_served(self.init_lora_weights, inits):
            options = ", ".join([repr(i) for i in BASIC_INITS] + [repr(i) for i in inits])
            problems.append(f"init_lora_weights={self.init_lora_weights!r} is not available; installed options: {options}")
        return problems


def init_is_served(init: Any, inits: Iterable[str]) -> bool:
    """Whether ``init`` is a basic init or one an extension serves (``"x_"`` entries are prefixes)."""
    if any(init is basic or (isinstance(init, str) and init == basic) for basic in BASIC_INITS):
        return True
    return isinstance(init, str) and any(init == i or (i.endswith("_") and init.startswith(i)) for i in inits)
