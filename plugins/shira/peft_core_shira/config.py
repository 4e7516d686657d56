"""``ShiraConfig``: the field names, defaults and JSON of Hugging Face PEFT's SHiRA config.

The mask function is not a field (a function cannot go into ``adapter_config.json``): it is the
attribute ``mask_fn``, set from ``mask_type`` — ``"random"`` gives :func:`~.masks.random_mask`;
any other name means "a custom function", which the user assigns after construction
(``config.mask_fn = my_fn``). A custom mask is not needed to *load* an adapter: the indices
are in the weights file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.lowrank import LORA_FAMILY_TARGET_MODULES, check_positive_int
from peft_core.targeting import check_target_fields

from .masks import random_mask

#: PEFT trains only the query and value projections of Phi with SHiRA by default
DEFAULT_TARGET_MODULES = {**LORA_FAMILY_TARGET_MODULES, "phi": ["q_proj", "v_proj"]}


@dataclass
class ShiraConfig(PeftConfig):
    """SHiRA: train a fixed sparse set of ``r (in + out)`` entries of each targeted weight."""

    peft_type: Optional[str] = "SHIRA"
    r: int = 32
    mask_type: str = "random"
    random_seed: Optional[int] = None
    target_modules: Optional[Union[list[str], set[str], str]] = None
    fan_in_fan_out: bool = False
    init_weights: bool = True
    modules_to_save: Optional[list[str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "SHIRA"
        check_target_fields(self, ("target_modules",))
        check_positive_int("r", self.r)
        if not isinstance(self.mask_type, str):
            raise ConfigError(f"mask_type must be a string ('random', or a name for your own mask_fn), got {self.mask_type!r}.")
        if self.random_seed is not None and (isinstance(self.random_seed, bool) or not isinstance(self.random_seed, int)):
            raise ConfigError(f"random_seed must be an integer or None, got {self.random_seed!r}.")
        for name in ("fan_in_fan_out", "init_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        self.mask_fn: Optional[Callable[..., Any]] = random_mask if self.mask_type == "random" else None
        if self.mask_fn is None and not self.inference_mode:
            warnings.warn(f"mask_type={self.mask_type!r} is not 'random': assign your mask function with "
                          "`config.mask_fn = fn` before adding the adapter (loading a saved adapter needs none).",
                          UserWarning, stacklevel=3)

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")
