"""``OFTConfig``: the field names, defaults and JSON of Hugging Face PEFT's OFT config."""

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
class OFTConfig(PeftConfig):
    """OFT: rotate a layer's input features by a trainable block-diagonal orthogonal matrix.

    Give exactly one of ``r`` (number of blocks) and ``oft_block_size``; each layer turns
    it into a divisor of its input size (the config keeps the requested value, so a
    loader derives the same shapes again).
    """

    peft_type: Optional[str] = "OFT"
    r: int = 0
    oft_block_size: int = 32
    module_dropout: float = 0.0
    target_modules: Optional[Union[list[str], set[str], str]] = None
    fan_in_fan_out: bool = False
    bias: Literal["none", "all", "oft_only"] = "none"
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    init_weights: bool = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    modules_to_save: Optional[list[str]] = None
    coft: bool = False
    eps: float = 6e-5
    block_share: bool = False
    use_cayley_neumann: bool = True
    num_cayley_neumann_terms: int = 5

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear", "conv")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "OFT"
        check_target_fields(self)
        if not _count(self.r) or not _count(self.oft_block_size):
            raise ConfigError(f"r and oft_block_size must be non-negative integers, got r={self.r!r}, "
                              f"oft_block_size={self.oft_block_size!r}.")
        if (self.r != 0) == (self.oft_block_size != 0):
            raise ConfigError(f"give exactly one of r ({self.r}) and oft_block_size ({self.oft_block_size}) as non-zero "
                              "(r × oft_block_size = in_features); set the other to 0.")
        if isinstance(self.module_dropout, bool) or not isinstance(self.module_dropout, (int, float)) \
                or not 0.0 <= self.module_dropout < 1.0:
            raise ConfigError(f"module_dropout must be in [0, 1), got {self.module_dropout!r}.")
        if self.bias not in ("none", "all", "oft_only"):
            raise ConfigError(f"bias must be 'none', 'all' or 'oft_only', got {self.bias!r}.")
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"init_weights must be True (identity) or False (random), got {self.init_weights!r}.")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or self.eps <= 0:
            raise ConfigError(f"eps (COFT's radius) must be a positive number, got {self.eps!r}.")
        if not _count(self.num_cayley_neumann_terms) or self.num_cayley_neumann_terms < 1:
            raise ConfigError(f"num_cayley_neumann_terms must be a positive integer, got {self.num_cayley_neumann_terms!r}.")

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")
