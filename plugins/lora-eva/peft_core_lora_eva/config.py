"""``EvaConfig``: the ``eva_config`` of a ``LoraConfig``, with PEFT's field names and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft_core.config import nested_config
from peft_core.errors import ConfigError


@dataclass
class EvaConfig:
    """How EVA finds and shares out the adapter ranks.

    ``rho`` (>= 1) caps a layer's rank at ``round(r · rho)``: the total rank budget stays
    the sum of the configured ranks, but layers whose inputs explain more variance may take
    ranks from others. ``tau`` is the cosine similarity between successive estimates of a
    component above which it counts as converged. ``use_label_mask``/``label_mask_value``
    leave out positions whose label is ignored (prompt tokens). ``whiten`` divides each
    component by the square root of its singular value. ``adjust_scaling_factors`` keeps
    ``lora_alpha / r`` of a layer whose rank changed at its configured value.
    """

    rho: float = 2.0
    tau: float = 0.99
    use_label_mask: bool = True
    label_mask_value: int = -100
    whiten: bool = False
    adjust_scaling_factors: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) or self.rho < 1.0:
            raise ConfigError(f"eva_config.rho must be a number >= 1.0 (1.0: no rank redistribution), got {self.rho!r}.")
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not 0.0 <= self.tau <= 1.0:
            raise ConfigError(f"eva_config.tau must be a cosine-similarity threshold in [0, 1], got {self.tau!r}.")

    @classmethod
    def coerce(cls, value: Any) -> EvaConfig:
        """An ``EvaConfig`` from itself or from the dict ``adapter_config.json`` holds."""
        return nested_config(cls, value, "eva_config")
