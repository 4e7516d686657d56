"""``GraloraConfig``: the field names, defaults and JSON of Hugging Face PEFT's GraLoRA config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.lowrank import LORA_FAMILY_TARGET_MODULES, check_dropout, check_positive_int
from peft_core.targeting import check_target_fields

BIAS_OPTIONS = ("none", "all", "gralora_only")


@dataclass
class GraloraConfig(PeftConfig):
    """GraLoRA: the weight is cut into ``gralora_k × gralora_k`` blocks, each with its own rank-``r/k`` pair.

    The parameter count equals LoRA's at rank ``r`` while the update's rank can reach ``k·r``.
    ``hybrid_r > 0`` adds a plain LoRA pair of that rank over the whole weight; both parts are
    scaled by ``alpha / (r + hybrid_r)``.
    """

    peft_type: Optional[str] = "GRALORA"
    r: int = 32
    hybrid_r: int = 0
    target_modules: Optional[Union[list[str], set[str], str]] = None
    alpha: int = 64
    gralora_dropout: float = 0.0
    gralora_k: int = 2
    fan_in_fan_out: bool = False
    bias: str = "none"
    modules_to_save: Optional[list[str]] = None
    init_weights: bool = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[str] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "GRALORA"
        check_target_fields(self, ("target_modules",))
        check_positive_int("r", self.r)
        check_positive_int("gralora_k", self.gralora_k)
        if isinstance(self.hybrid_r, bool) or not isinstance(self.hybrid_r, int) or self.hybrid_r < 0:
            raise ConfigError(f"hybrid_r must be a non-negative integer (0 turns the hybrid LoRA part off), got {self.hybrid_r!r}.")
        if self.r % self.gralora_k:
            raise ConfigError(f"r ({self.r}) must be divisible by gralora_k ({self.gralora_k}): each of the k blocks "
                              "of a row gets r / k of the rank.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ConfigError(f"alpha must be a number, got {self.alpha!r}.")
        check_dropout("gralora_dropout", self.gralora_dropout)
        for name in ("fan_in_fan_out", "init_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.bias not in BIAS_OPTIONS:
            raise ConfigError(f"bias must be one of {BIAS_OPTIONS}, got {self.bias!r}.")

    @property
    def scaling(self) -> float:
        """``alpha / (r + hybrid_r)``: one scale for the block part and the hybrid part."""
        return self.alpha / (self.r + self.hybrid_r)

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return LORA_FAMILY_TARGET_MODULES.get(model_type or "")
