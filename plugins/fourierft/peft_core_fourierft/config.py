"""``FourierFTConfig``: the field names, defaults and JSON of Hugging Face PEFT's FourierFT config."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.orthogonal import DEFAULT_TARGET_MODULES as LAYER_METHOD_DEFAULTS
from peft_core.targeting import check_target_fields

BIAS_CHOICES = ("none", "all", "fourier_only")
#: targets when none are given, by model type: the shared table, but GPT-2's MLP output (as PEFT chooses)
DEFAULT_TARGET_MODULES = {**LAYER_METHOD_DEFAULTS, "gpt2": ["mlp.c_proj"], "gpt_bigcode": ["mlp.c_proj"]}


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class FourierFTConfig(PeftConfig):
    """FourierFT: each targeted weight changes by the inverse 2-D DFT of ``n_frequency`` learned coefficients.

    The coefficients sit at positions of the ``(out, in)`` spectrum drawn from ``random_loc_seed``
    (the same seed picks the same positions as PEFT); ``scaling`` multiplies the update.
    ``init_weights=False`` (PEFT's default) starts the coefficients from a standard normal, so a
    fresh adapter is *not* the identity; ``True`` starts them at zero.
    """

    peft_type: Optional[str] = "FOURIERFT"
    n_frequency: int = 1000
    scaling: float = 150.0
    random_loc_seed: Optional[int] = 777
    fan_in_fan_out: bool = False
    target_modules: Optional[Union[list[str], str]] = None
    exclude_modules: Optional[Union[list[str], str]] = None
    bias: str = "none"
    modules_to_save: Optional[list[str]] = None
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    n_frequency_pattern: Optional[dict] = field(default_factory=dict)
    init_weights: bool = False

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "FOURIERFT"
        check_target_fields(self)
        if not _positive_int(self.n_frequency):
            raise ConfigError(f"n_frequency must be a positive integer, got {self.n_frequency!r}.")
        if isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)):
            raise ConfigError(f"scaling must be a number, got {self.scaling!r}.")
        if isinstance(self.random_loc_seed, bool) or not isinstance(self.random_loc_seed, int):
            raise ConfigError(f"random_loc_seed must be an integer seed, got {self.random_loc_seed!r}.")
        if self.bias not in BIAS_CHOICES:
            raise ConfigError(f"bias must be one of {', '.join(BIAS_CHOICES)}; got {self.bias!r}.")
        for name in ("fan_in_fan_out", "init_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.n_frequency_pattern is None:
            self.n_frequency_pattern = {}
        if not isinstance(self.n_frequency_pattern, dict):
            raise ConfigError("n_frequency_pattern must map module names to n_frequency values, "
                              f"got {self.n_frequency_pattern!r}.")
        for key, value in self.n_frequency_pattern.items():
            if not _positive_int(value):
                raise ConfigError(f"n_frequency_pattern[{key!r}] must be a positive integer, got {value!r}.")

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")

    def n_frequency_for(self, module_name: str) -> int:
        """``n_frequency`` of one module: the first pattern key that ends its name after a dot, or the full name.

        This is PEFT's rule for ``n_frequency_pattern`` (stricter than ``rank_pattern`` elsewhere:
        a key must follow a dot unless it is the whole module name).
        """
        for key in self.n_frequency_pattern:
            if re.match(rf".*\.{key}$", module_name):
                return self.n_frequency_pattern[key]
        return self.n_frequency_pattern.get(module_name, self.n_frequency)
