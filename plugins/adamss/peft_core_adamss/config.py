"""``AdamssConfig``: the field names, defaults and JSON of Hugging Face PEFT's AdaMSS config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.orthogonal import DEFAULT_TARGET_MODULES as LAYER_METHOD_DEFAULTS
from peft_core.targeting import check_target_fields

INITS = ("orthogonal", None)
#: targets when none are given, by model type: the shared table plus ViT's attention (as PEFT chooses)
DEFAULT_TARGET_MODULES = {**LAYER_METHOD_DEFAULTS, "vit": ["query", "value"]}


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class AdamssConfig(PeftConfig):
    """AdaMSS: the weight's top-``r`` left singular vectors are clustered into ``num_subspaces`` groups of output rows;
    each group learns a rank-``subspace_rank`` update inside the ``r``-dimensional input subspace.

    With ``use_asa`` the adaptive subspace allocation freezes the least important subspaces during
    training (call ``model.base_model.update_and_allocate(step)`` after each optimizer step, or use
    :class:`~peft_core_adamss.AdamssAsaCallback` with a ``transformers.Trainer``), shrinking from
    all subspaces to ``asa_target_subspaces`` between ``init_warmup`` and ``final_warmup``.
    ``init_weights="orthogonal"`` starts every ``B`` at zero (identity at init); ``None`` draws
    small random ``B``. ``random_seed`` fixes the randomized SVD, so the clustering (which is not
    saved) is the same when the adapter is loaded again.
    """

    peft_type: Optional[str] = "ADAMSS"
    r: int = 100
    num_subspaces: int = 5
    subspace_rank: int = 1
    target_modules: Optional[Union[list[str], str]] = None
    init_weights: Optional[str] = "orthogonal"
    modules_to_save: Optional[list[str]] = None
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    use_asa: bool = False
    asa_target_subspaces: int = 50
    init_warmup: int = 50
    final_warmup: int = 1000
    mask_interval: int = 100
    asa_importance_beta: float = 0.85
    asa_uncertainty_beta: float = 0.85
    asa_schedule_exponent: float = 3.0
    use_dynamic_rank: bool = False
    svd_threshold: float = 0.1
    random_seed: int = 0

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "ADAMSS"
        check_target_fields(self, ("target_modules",))
        if self.init_weights is False:  # PEFT accepts False for "no orthogonal init"
            self.init_weights = None
        if self.init_weights not in INITS:
            raise ConfigError(f"init_weights must be 'orthogonal' or None, got {self.init_weights!r}.")
        for name in ("r", "num_subspaces", "subspace_rank"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("use_asa", "use_dynamic_rank"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if not _int(self.random_seed):
            raise ConfigError(f"random_seed must be an integer, got {self.random_seed!r}.")
        if not _number(self.svd_threshold) or not 0 <= self.svd_threshold <= 1:
            raise ConfigError("svd_threshold must be a fraction of the largest singular value in [0, 1], "
                              f"got {self.svd_threshold!r}.")
        for name in ("init_warmup", "final_warmup", "asa_target_subspaces", "mask_interval"):
            if not _int(getattr(self, name)):
                raise ConfigError(f"{name} must be an integer, got {getattr(self, name)!r}.")
        for name in ("asa_importance_beta", "asa_uncertainty_beta"):
            value = getattr(self, name)
            if not _number(value) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be an EMA coefficient in [0, 1), got {value!r}.")
        if not _number(self.asa_schedule_exponent):
            raise ConfigError(f"asa_schedule_exponent must be a number, got {self.asa_schedule_exponent!r}.")
        if self.use_asa:
            self._check_asa_schedule()

    def default_target_modules(self, model_type: str | None) -> list[str] | None:
        return DEFAULT_TARGET_MODULES.get(model_type or "")

    def _check_asa_schedule(self) -> None:
        if self.mask_interval <= 0:
            raise ConfigError(f"mask_interval must be a positive step count with use_asa, got {self.mask_interval}.")
        if self.init_warmup >= self.final_warmup:
            raise ConfigError(
                f"init_warmup ({self.init_warmup}) must be smaller than final_warmup ({self.final_warmup}) when "
                "use_asa=True: pruning happens between them."
            )
        if self.asa_target_subspaces <= 0:
            raise ConfigError(f"asa_target_subspaces must be positive with use_asa, got {self.asa_target_subspaces}.")
        if self.asa_schedule_exponent <= 0:
            raise ConfigError(f"asa_schedule_exponent must be positive with use_asa, got {self.asa_schedule_exponent}.")
