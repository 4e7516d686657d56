"""``HiraConfig``: the field names, defaults and JSON of Hugging Face PEFT's HiRA config."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.lowrank import LORA_FAMILY_TARGET_MODULES, check_dropout, check_positive_int
from peft_core.targeting import check_target_fields


@dataclass
class HiraConfig(PeftConfig):
    """HiRA: ``W x + (W ⊙ B A) x`` — the frozen weight, modulated entry-wise by a rank-``r`` update.

    The Hadamard product with ``W`` makes the update as high-rank as ``W`` itself while only
    ``r (in + out)`` numbers are trained.
    """

    peft_type: Optional[str] = "HIRA"
    r: int = 32
    target_modules: Optional[Union[list[str], set[str], str]] = None
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    hira_dropout: float = 0.0
    fan_in_fan_out: bool = False
    modules_to_save: Optional[list[str]] = None
    init_weights: Union[bool, Literal["gaussian"], None] = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    rank_pattern: Optional[dict] = field(default_factory=dict)

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear", "conv", "embedding")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "HIRA"
        check_target_fields(self)
        check_positive_int("r", self.r)
        check_dropout("hira_dropout", self.hira_dropout)
        if not isinstance(self.fan_in_fan_out, bool):
            raise ConfigError(f"fan_in_fan_out must be True or False, got {self.fan_in_fan_out!r}.")
        if self.init_weights is None:  # PEFT's annotation allows None; it means "leave the random draw"
            self.init_weights = False
        if not (isinstance(self.init_weights, bool) or self.init_weights == "gaussian"):
            raise ConfigError(f"init_weights must be True, False or 'gaussian', got {self.init_weights!r}.")
        if self.rank_pattern is None:
            self.rank_pattern = {}
        if not isinstance(self.rank_pattern, dict):
            raise ConfigError(f"rank_pattern must be a dict of module-name pattern -> rank, got {self.rank_pattern!r}.")
        for key, r in self.rank_pattern.items():
            check_positive_int(f"rank_pattern[{key!r}]", r)
        if self.rank_pattern and not self.inference_mode:
            warnings.warn(
                "HiRA's rank_pattern only applies to layers that already hold a HiRA adapter (a second adapter on "
                "the same modules); new layers get r. This is what peft==0.21.2 does, and the saved shapes must "
                "match its files.", UserWarning, stacklevel=3)

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return LORA_FAMILY_TARGET_MODULES.get(model_type or "")
