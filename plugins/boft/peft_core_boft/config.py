"""``BOFTConfig``: the field names, defaults and JSON of Hugging Face PEFT's BOFT config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.targeting import check_target_fields
from peft_core.orthogonal import DEFAULT_TARGET_MODULES


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class BOFTConfig(PeftConfig):
    """BOFT: rotate a layer's input by a product of butterfly-permuted block-diagonal orthogonal factors.

    Give exactly one of ``boft_block_size`` and ``boft_block_num`` (the other 0); with
    ``boft_n_butterfly_factor = m`` the rotation is a product of ``m`` factors, the
    ``i``-th mixing blocks ``2^i`` apart, and each output row is scaled by ``boft_s``.
    """

    peft_type: Optional[str] = "BOFT"
    boft_block_size: int = 4
    boft_block_num: int = 0
    boft_n_butterfly_factor: int = 1
    target_modules: Optional[Union[list[str], set[str], str]] = None
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    boft_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: Literal["none", "all", "boft_only"] = "none"
    modules_to_save: Optional[list[str]] = None
    init_weights: bool = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear", "conv")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "BOFT"
        check_target_fields(self)
        if not _count(self.boft_block_size) or not _count(self.boft_block_num):
            raise ConfigError(f"boft_block_size and boft_block_num must be non-negative integers, got "
                              f"{self.boft_block_size!r} and {self.boft_block_num!r}.")
        if (self.boft_block_size != 0) == (self.boft_block_num != 0):
            raise ConfigError(f"give exactly one of boft_block_size ({self.boft_block_size}) and boft_block_num "
                              f"({self.boft_block_num}) as non-zero (size × num = in_features); set the other to 0.")
        if not _count(self.boft_n_butterfly_factor) or self.boft_n_butterfly_factor < 1:
            raise ConfigError(f"boft_n_butterfly_factor must be a positive integer, got {self.boft_n_butterfly_factor!r}.")
        if isinstance(self.boft_dropout, bool) or not isinstance(self.boft_dropout, (int, float)) \
                or not 0.0 <= self.boft_dropout < 1.0:
            raise ConfigError(f"boft_dropout must be in [0, 1), got {self.boft_dropout!r}.")
        if self.bias not in ("none", "all", "boft_only"):
            raise ConfigError(f"bias must be 'none', 'all' or 'boft_only', got {self.bias!r}.")
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"init_weights must be True (identity) or False (random), got {self.init_weights!r}.")

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")
