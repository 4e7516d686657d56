"""``PromptEncoderConfig``: PEFT's fields and defaults for P-tuning."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from peft_core.config import PromptLearningConfig
from peft_core.errors import ConfigError


class PromptEncoderReparameterizationType(str, enum.Enum):
    """The network that turns the virtual-token embeddings into the prompt while training."""

    MLP = "MLP"
    LSTM = "LSTM"


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning: virtual-token embeddings passed through an MLP (or LSTM + MLP) before they are prepended.

    ``encoder_hidden_size`` defaults to ``token_dim``; ``encoder_num_layers`` and
    ``encoder_dropout`` shape the LSTM (the MLP always has PEFT's three linear layers).
    """

    peft_type: Optional[str] = "P_TUNING"
    encoder_reparameterization_type: Union[str, PromptEncoderReparameterizationType] = PromptEncoderReparameterizationType.MLP
    encoder_hidden_size: Optional[int] = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = getattr(self.encoder_reparameterization_type, "value", self.encoder_reparameterization_type)
        try:
            self.encoder_reparameterization_type = PromptEncoderReparameterizationType(str(kind))
        except ValueError:
            raise ConfigError(f"encoder_reparameterization_type must be 'MLP' or 'LSTM', got {kind!r}.") from None
        if self.encoder_hidden_size is not None and (isinstance(self.encoder_hidden_size, bool)
                                                     or not isinstance(self.encoder_hidden_size, int)
                                                     or self.encoder_hidden_size < 1):
            raise ConfigError(f"encoder_hidden_size must be a positive integer or None, got {self.encoder_hidden_size!r}.")
        if isinstance(self.encoder_num_layers, bool) or not isinstance(self.encoder_num_layers, int) \
                or self.encoder_num_layers < 1:
            raise ConfigError(f"encoder_num_layers must be a positive integer, got {self.encoder_num_layers!r}.")
        if isinstance(self.encoder_dropout, bool) or not isinstance(self.encoder_dropout, (int, float)) \
                or not 0.0 <= self.encoder_dropout < 1.0:
            raise ConfigError(f"encoder_dropout must be a probability in [0, 1), got {self.encoder_dropout!r}.")
