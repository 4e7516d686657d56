"""``VeraConfig``: the field names, defaults and JSON of Hugging Face PEFT's VeRA config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.targeting import check_target_fields

BIAS_CHOICES = ("none", "all", "vera_only")


@dataclass
class VeraConfig(PeftConfig):
    """VeRA: ``W x + Λ_b B Λ_d A x`` with frozen random ``A``, ``B`` shared by every layer of the adapter.

    ``A`` (``r × largest in``) and ``B`` (``largest out × r``) are drawn from a generator seeded
    with ``projection_prng_key``; each layer slices them to its size and trains only the vectors
    ``vera_lambda_d`` (``r``, starts at ``d_initial``) and ``vera_lambda_b`` (``out``, starts at 0).
    ``save_projection=False`` leaves the projections out of the adapter file; they are drawn
    again from the key when loading.
    """

    peft_type: Optional[str] = "VERA"
    r: int = 256
    target_modules: Optional[Union[list[str], set[str], str]] = None
    projection_prng_key: int = 0
    save_projection: bool = True
    vera_dropout: float = 0.0
    d_initial: float = 0.1
    fan_in_fan_out: bool = False
    bias: str = "none"
    modules_to_save: Optional[list[str]] = None
    init_weights: bool = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "VERA"
        check_target_fields(self, ("target_modules",))
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"r must be a positive integer (the rank of the shared projections), got {self.r!r}.")
        if not isinstance(self.projection_prng_key, int) or isinstance(self.projection_prng_key, bool):
            raise ConfigError(f"projection_prng_key must be an integer seed, got {self.projection_prng_key!r}.")
        for name in ("save_projection", "fan_in_fan_out", "init_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if isinstance(self.vera_dropout, bool) or not isinstance(self.vera_dropout, (int, float)) \
                or not 0.0 <= self.vera_dropout < 1.0:
            raise ConfigError(f"vera_dropout must be a probability in [0, 1), got {self.vera_dropout!r}.")
        if isinstance(self.d_initial, bool) or not isinstance(self.d_initial, (int, float)):
            raise ConfigError(f"d_initial must be a number (the starting value of vera_lambda_d), got {self.d_initial!r}.")
        if self.bias not in BIAS_CHOICES:
            raise ConfigError(f"bias must be one of {', '.join(BIAS_CHOICES)}, got {self.bias!r}.")
