"""``CordaConfig``: the ``corda_config`` of a ``LoraConfig``, with PEFT's field names and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from peft_core.config import nested_config
from peft_core.errors import ConfigError

METHODS = ("ipm", "kpm")


@dataclass
class CordaConfig:
    """How :func:`preprocess_corda` builds and caches what the ``"corda"`` init needs.

    ``corda_method``: ``"ipm"`` (instruction-previewed) puts the *largest* covariance-weighted
    singular directions into the adapter, to learn the task fast; ``"kpm"``
    (knowledge-preserved) puts the *smallest* there and leaves the directions the
    calibration data (world knowledge) relies on in the frozen base. ``cache_file`` stores the
    cropped decomposition (small, reusable for the same rank), ``covariance_file`` the
    covariance matrices (large, reusable for any rank). ``use_float16_for_covariance`` halves
    their memory at some precision; ``prune_temporary_fields=False`` keeps the covariance
    (``covariance_matrix``, ``sample_count``) on each module for inspection.
    """

    cache_file: Optional[str] = None
    covariance_file: Optional[str] = None
    corda_method: Literal["ipm", "kpm"] = "ipm"
    verbose: bool = False
    use_float16_for_covariance: bool = False
    prune_temporary_fields: bool = True

    def __post_init__(self) -> None:
        if self.corda_method not in METHODS:
            raise ConfigError(f"corda_config.corda_method must be 'ipm' or 'kpm', got {self.corda_method!r}.")

    @classmethod
    def coerce(cls, value: Any) -> CordaConfig:
        """A ``CordaConfig`` from itself or from the dict ``adapter_config.json`` holds."""
        return nested_config(cls, value, "corda_config")
