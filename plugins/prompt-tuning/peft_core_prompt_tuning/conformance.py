"""Prompt tuning's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn for the tiny Llama (causal LM), BERT (sequence classification) and T5
(seq2seq) with RANDOM or SAMPLE_VOCAB init; TEXT init needs a tokenizer directory and is
tested in the plugin's own tests. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import PromptTuningConfig

KINDS = ("tiny_llama", "tiny_bert", "tiny_t5")


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import prompt_learning_fields  # imports hypothesis: only when asked

    @st.composite
    def build(draw: Any) -> PromptTuningConfig:
        return PromptTuningConfig(prompt_tuning_init=draw(st.sampled_from(["RANDOM", "SAMPLE_VOCAB"])),
                                  **prompt_learning_fields(draw, kind))

    return build()


@lru_cache(maxsize=1)
def prompt_tuning_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in KINDS},
        invalid_configs=st.sampled_from([
            {"num_virtual_tokens": 0, "task_type": "CAUSAL_LM"},
            {"num_virtual_tokens": None, "task_type": "CAUSAL_LM"},
            {"num_virtual_tokens": 4},  # no task_type: where would the tokens go?
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "prompt_tuning_init": "WORDS"},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "prompt_tuning_init": "TEXT"},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "tokenizer_kwargs": {"use_fast": True}},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "num_transformer_submodules": 3},
        ]),
        notes={"identity_at_init": "virtual tokens change outputs from the start",
               "merge": "a prompt changes inputs, not weights"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return prompt_tuning_cases() if method == "PROMPT_TUNING" else None
