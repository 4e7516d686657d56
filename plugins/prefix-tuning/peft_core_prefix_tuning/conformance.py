"""Prefix tuning's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn for the tiny Llama (causal LM, grouped-query attention: the prefix takes
the key/value heads' shape), BERT (sequence classification) and T5 (seq2seq: the decoder's
self-attention cache), with and without the projection MLP. ``init_weights="zero"`` is left
out: a zero prefix still changes outputs (it adds attended positions) but the suite's
perturbation makes it random anyway. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import PrefixTuningConfig

KINDS = ("tiny_llama", "tiny_bert", "tiny_t5")


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import prompt_learning_fields  # imports hypothesis: only when asked

    @st.composite
    def build(draw: Any) -> PrefixTuningConfig:
        projection = draw(st.booleans())
        hidden = draw(st.sampled_from([None, 8])) if projection else None
        return PrefixTuningConfig(prefix_projection=projection, encoder_hidden_size=hidden,
                                  **prompt_learning_fields(draw, kind))

    return build()


@lru_cache(maxsize=1)
def prefix_tuning_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in KINDS},
        invalid_configs=st.sampled_from([
            {"num_virtual_tokens": 0, "task_type": "CAUSAL_LM"},
            {"num_virtual_tokens": 4},  # no task_type: which cache the prefix belongs to is unknown
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "init_weights": "ones"},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "prefix_projection": "yes"},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "encoder_hidden_size": 0},
            {"num_virtual_tokens": 4, "task_type": "CAUSAL_LM", "num_layers": -1},
        ]),
        notes={"identity_at_init": "a prefix adds attended positions from the start",
               "merge": "a prefix lives in the attention cache, not in the weights"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return prefix_tuning_cases() if method == "PREFIX_TUNING" else None
