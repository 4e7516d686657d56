"""``TrainableTokensConfig``: the field names, defaults and JSON of Hugging Face PEFT's trainable tokens config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

from torch import nn

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError
from peft_core.targeting import check_target_fields


def check_token_indices(indices: Any, what: str) -> None:
    """Token indices must be distinct non-negative integers: a repeated row would have two trained values."""
    if not isinstance(indices, (list, tuple)) or not indices:
        raise ConfigError(f"{what} must be a non-empty list of token ids (ints), got {indices!r}.")
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ConfigError(f"{what} must hold non-negative token ids (ints), got {index!r}.")
    if len(set(indices)) != len(indices):
        raise ConfigError(f"{what} lists a token id more than once ({sorted(indices)}); list each token once.")


def input_embeddings_name(model: nn.Module, fallback: str = "embed_tokens") -> str:
    """The module path of the model's input embedding (``model.embed_tokens``), as PEFT picks the default target."""
    getter = getattr(model, "get_input_embeddings", None)
    try:
        embedding = getter() if getter is not None else None
    except (NotImplementedError, AttributeError):
        embedding = None
    if embedding is not None:
        for name, module in model.named_modules():
            if module is embedding:
                return name
    return fallback


@dataclass
class TrainableTokensConfig(PeftConfig):
    """Trainable tokens: the rows ``token_indices`` of the targeted embedding are trained, the rest stays frozen."""

    peft_type: Optional[str] = "TRAINABLE_TOKENS"
    token_indices: list[int] = field(default_factory=list)
    target_modules: Optional[Union[list[str], str]] = None
    init_weights: bool = True

    #: an input embedding, or a linear output head whose rows are tokens (tied to the embedding)
    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("embedding", "linear")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "TRAINABLE_TOKENS"
        check_target_fields(self, ("target_modules",))
        check_token_indices(self.token_indices, "token_indices")
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"init_weights must be True (copy the current rows) or False (random), "
                              f"got {self.init_weights!r}.")

    def target_modules_for_model(self, model: nn.Module) -> str:
        """The input embedding when no ``target_modules`` are given (PEFT writes its path into the config)."""
        return input_embeddings_name(model)
