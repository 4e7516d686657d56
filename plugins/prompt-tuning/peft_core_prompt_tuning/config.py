"""``PromptTuningConfig``: PEFT's fields and defaults; how the virtual tokens start."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from peft_core.config import PromptLearningConfig
from peft_core.errors import ConfigError


class PromptTuningInit(str, enum.Enum):
    """Where the virtual-token embeddings start: words of a text, random vocabulary rows, or noise."""

    TEXT = "TEXT"
    SAMPLE_VOCAB = "SAMPLE_VOCAB"
    RANDOM = "RANDOM"


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning: ``num_virtual_tokens`` trainable embeddings in front of every input.

    ``prompt_tuning_init="TEXT"`` starts them from the embeddings of ``prompt_tuning_init_text``
    tokenized by the tokenizer in the local directory ``tokenizer_name_or_path`` (never
    downloaded), repeated or cut to length.
    """

    peft_type: Optional[str] = "PROMPT_TUNING"
    prompt_tuning_init: Union[PromptTuningInit, str] = PromptTuningInit.RANDOM
    prompt_tuning_init_text: Optional[str] = None
    tokenizer_name_or_path: Optional[str] = None
    tokenizer_kwargs: Optional[dict] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.prompt_tuning_init = PromptTuningInit(str(getattr(self.prompt_tuning_init, "value",
                                                                   self.prompt_tuning_init)))
        except ValueError:
            raise ConfigError(f"prompt_tuning_init must be one of {[m.value for m in PromptTuningInit]}, "
                              f"got {self.prompt_tuning_init!r}.") from None
        text_init = self.prompt_tuning_init == PromptTuningInit.TEXT
        if text_init and not self.tokenizer_name_or_path:
            raise ConfigError("prompt_tuning_init='TEXT' needs tokenizer_name_or_path (a local tokenizer directory).")
        if text_init and not self.prompt_tuning_init_text:
            raise ConfigError("prompt_tuning_init='TEXT' needs prompt_tuning_init_text (the words to start from).")
        if self.tokenizer_kwargs and not text_init:
            raise ConfigError("tokenizer_kwargs are only used with prompt_tuning_init='TEXT'; remove them.")
