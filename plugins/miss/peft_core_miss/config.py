"""``MissConfig``: the field names, defaults and JSON of Hugging Face PEFT's MiSS config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.lowrank import LORA_FAMILY_TARGET_MODULES, check_dropout, check_positive_int
from peft_core.targeting import check_target_fields

#: ``init_weights`` values and the MiSS variant each selects
MODES = {True: "balance", False: "balance", "bat": "bat", "mini": "mini"}


@dataclass
class MissConfig(PeftConfig):
    """MiSS: one small trainable shard, shared (repeated) across the shards of each targeted weight.

    ``init_weights`` picks the variant: ``True`` (default, "balance") trains an ``(r, out)``
    shard added to every ``r``-wide column block of the weight; ``"mini"`` trains an ``(r, mini_r)``
    shard repeated along the outputs too; ``"bat"`` trains one ``(r, r)`` block per row of
    blocks and updates each weight block ``W_ij`` to ``W_ij (I + B_i) + B_i`` — a non-linear,
    weight-dependent update. ``False`` is the balance variant with a random (non-identity) shard.
    """

    peft_type: Optional[str] = "MISS"
    r: int = 64
    miss_dropout: float = 0.0
    mini_r: int = 1
    target_modules: Optional[Union[list[str], set[str], str]] = None
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    init_weights: Union[bool, Literal["bat", "mini"]] = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[str] = None
    bias: str = "none"
    modules_to_save: Optional[list[str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "MISS"
        check_target_fields(self)
        check_positive_int("r", self.r)
        check_positive_int("mini_r", self.mini_r)
        check_dropout("miss_dropout", self.miss_dropout)
        if not (isinstance(self.init_weights, bool) or self.init_weights in ("bat", "mini")):
            raise ConfigError(f"init_weights must be True, False, 'bat' or 'mini', got {self.init_weights!r}.")
        if not isinstance(self.bias, str):
            raise ConfigError(f"bias must be 'none', 'all' or 'MiSS_only', got {self.bias!r}.")

    @property
    def mode(self) -> str:
        """The MiSS variant: ``"balance"``, ``"bat"`` or ``"mini"``."""
        return MODES[self.init_weights]

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return LORA_FAMILY_TARGET_MODULES.get(model_type or "")
