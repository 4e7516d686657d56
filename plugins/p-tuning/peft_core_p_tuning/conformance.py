"""P-tuning's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn for the tiny Llama (causal LM), BERT (sequence classification) and T5
(seq2seq), with the MLP or the LSTM encoder. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import PromptEncoderConfig

KINDS = ("tiny_llama", "tiny_bert", "tiny_t5")


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import prompt_learning_fields  # imports hypothesis: only when asked

    @st.composite
    def build(draw: Any) -> PromptEncoderConfig:
        lstm = draw(st.booleans())
        return PromptEncoderConfig(encoder_reparameterization_type="LSTM" if lstm else "MLP",
                                   encoder_hidden_size=draw(st.sampled_from([None, 8])),
                                   encoder_num_layers=draw(st.sampled_from([1, 2])) if lstm else 2,
                                   **prompt_learning_fields(draw, kind))

    return build()


@lru_cache(maxsize=1)
def p_tuning_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in KINDS},
        invalid_configs=st.sampled_from([
            {"num_virtual_tokens": 0, "task_type": "CAUSAL_LM"},
            {"num_virtual_tokens": 4},  # no task_type: where would the tokens go?
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "encoder_reparameterization_type": "GRU"},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "encoder_hidden_size": -2},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "encoder_num_layers": 0},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "encoder_dropout": 1.5},
        ]),
        notes={"identity_at_init": "virtual tokens change outputs from the start",
               "merge": "a prompt changes inputs, not weights"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return p_tuning_cases() if method == "P_TUNING" else None
