"""``PrefixTuningConfig``: PEFT's fields and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

from peft_core.config import PromptLearningConfig
from peft_core.errors import ConfigError


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning: ``num_virtual_tokens`` learned keys and values in front of every attention layer's cache.

    With ``prefix_projection`` the prefix is computed while training by a two-layer MLP
    (hidden size ``encoder_hidden_size``, default ``token_dim``) from smaller embeddings, which
    trains more stably; the materialized prefix is what is saved. ``init_weights="zero"``
    starts the prefix at zero.
    """

    peft_type: Optional[str] = "PREFIX_TUNING"
    init_weights: Optional[Literal["zero"]] = None
    encoder_hidden_size: Optional[int] = None
    prefix_projection: bool = False

    prompt_is_kv_cache: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_weights not in (None, "zero"):
            raise ConfigError(f"init_weights must be None (random) or 'zero', got {self.init_weights!r}.")
        if not isinstance(self.prefix_projection, bool):
            raise ConfigError(f"prefix_projection must be True or False, got {self.prefix_projection!r}.")
        if self.encoder_hidden_size is not None and (isinstance(self.encoder_hidden_size, bool)
                                                     or not isinstance(self.encoder_hidden_size, int)
                                                     or self.encoder_hidden_size < 1):
            raise ConfigError(f"encoder_hidden_size must be a positive integer or None, got {self.encoder_hidden_size!r}.")
