"""The P-tuning plugin: registers ``P_TUNING`` (entry point ``peft_core: p_tuning``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_core import MethodSpec, hookimpl
from peft_core.prompt import (PROMPT_KEY, PROMPT_LEARNING_CAPABILITIES, PROMPT_LEARNING_METHODS,
                              PROMPT_LEARNING_UNSUPPORTED, PromptLearningTuner)
from peft_core.registry import MethodRegistry

from .config import PromptEncoderConfig, PromptEncoderReparameterizationType
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .encoder import PromptEncoder

NAME = "P_TUNING"


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name=NAME,
            config_class=PromptEncoderConfig,
            prefix=PROMPT_KEY,
            tuner_class=PromptLearningTuner,
            capabilities=PROMPT_LEARNING_CAPABILITIES,
            unsupported=PROMPT_LEARNING_UNSUPPORTED,
            shares_prefix_with=tuple(m for m in PROMPT_LEARNING_METHODS if m != NAME),
            exports={"PromptEncoderReparameterizationType": PromptEncoderReparameterizationType,
                     "PromptEncoder": PromptEncoder},
            description="P-tuning: virtual tokens produced by a small MLP or LSTM, prepended to every input.",
            paper="https://arxiv.org/abs/2103.10385",
        )
    )


@hookimpl
def peft_core_create_prompt_encoder(spec: Any, config: Any, adapter_name: str, word_embeddings: nn.Module) -> Any:
    return PromptEncoder(config) if spec.name == NAME else None
