"""``DeloraConfig``: the field names, defaults and JSON of Hugging Face PEFT's DeLoRA config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.orthogonal import DEFAULT_TARGET_MODULES
from peft_core.targeting import check_target_fields, pattern_value

BIAS_CHOICES = ("none", "all", "delora_only")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class DeloraConfig(PeftConfig):
    """DeLoRA: a rank-``r`` update whose rank-one terms are normalized, so its norm is bounded by ``delora_lambda``.

    ``rank_pattern``/``lambda_pattern`` give other values to modules whose names end with a key
    (``(.*\\.)?key$``). ``module_dropout`` drops entries of the adapter's input while training.
    ``init_weights=True`` starts ``B`` at zero (identity at init); ``False`` makes both factors random.
    """

    peft_type: Optional[str] = "DELORA"
    r: int = 8
    delora_lambda: float = 15
    module_dropout: float = 0.0
    target_modules: Optional[Union[list[str], str]] = None
    exclude_modules: Optional[Union[list[str], str]] = None
    bias: str = "none"
    init_weights: bool = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    rank_pattern: Optional[dict] = field(default_factory=dict)
    lambda_pattern: Optional[dict] = field(default_factory=dict)
    modules_to_save: Optional[list[str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "DELORA"
        check_target_fields(self)
        if not _positive_int(self.r):
            raise ConfigError(f"r must be a positive integer, got {self.r!r}.")
        if not _number(self.delora_lambda):
            raise ConfigError(f"delora_lambda must be a number (the bound on the update's norm), "
                              f"got {self.delora_lambda!r}.")
        if not _number(self.module_dropout) or not 0.0 <= self.module_dropout < 1.0:
            raise ConfigError(f"module_dropout must be a probability in [0, 1), got {self.module_dropout!r}.")
        if self.bias not in BIAS_CHOICES:
            raise ConfigError(f"bias must be one of {', '.join(BIAS_CHOICES)}; got {self.bias!r}.")
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"init_weights must be True or False, got {self.init_weights!r}.")
        for name, ok, what in (("rank_pattern", _positive_int, "a positive integer rank"),
                               ("lambda_pattern", _number, "a number")):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, {})
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must map module names to values, got {value!r}.")
            for key, item in value.items():
                if not ok(item):
                    raise ConfigError(f"{name}[{key!r}] must be {what}, got {item!r}.")

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")

    def rank_for(self, module_name: str) -> int:
        return pattern_value(self.rank_pattern, module_name, self.r)

    def lambda_for(self, module_name: str) -> float:
        return pattern_value(self.lambda_pattern, module_name, self.delora_lambda)
