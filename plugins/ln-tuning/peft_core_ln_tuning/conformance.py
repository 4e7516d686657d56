"""LN tuning's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Targets are the normalisation layers of each tiny model (LayerNorm, Llama's RMSNorm, T5's
LayerNorm); on the Llama the model type's default targets and regex/exclude forms are drawn
too. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import LNTuningConfig

#: normalisation layers in each tiny model of ``peft_core.conformance.models``
TARGETS = {
    "mlp": ["norm"],
    "tiny_llama": ["input_layernorm", "post_attention_layernorm", "norm"],
    "tiny_gpt2": ["ln_1", "ln_2", "ln_f"],
    "tiny_t5": ["layer_norm", "final_layer_norm"],
}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
        target_module_forms,
    )

    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> LNTuningConfig:
        chosen = drawn_targets(draw, names)
        # LN tuning has no layers_to_transform; exclude_modules is drawn instead
        targets, extra = target_module_forms(draw, kind, chosen, forms=("list", "regex", "default"))
        if kind == "tiny_llama" and isinstance(targets, list) and draw(st.booleans()):
            extra["exclude_modules"] = r"model\.layers\.0\..*"  # keep only the first layer's norms out
        fields = model_kind_fields(draw, kind, TASK_TYPES)
        fields.pop("fan_in_fan_out", None)  # GPT-2's norms are plain LayerNorms
        return LNTuningConfig(target_modules=targets, **extra, **fields)

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": "(unclosed"},
        {"target_modules": ["norm"], "exclude_modules": [3]},
        {"target_modules": 5},
        {"task_type": "NOT_A_TASK"},
        # modules without a weight (attention blocks) are not layers LN tuning can copy
        {"target_modules": ["self_attn", "attn", "emb_missing"]},
    ])


@lru_cache(maxsize=1)
def ln_tuning_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(configs={kind: _configs(st, kind) for kind in TARGETS}, invalid_configs=_invalid(st))


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return ln_tuning_cases() if method == "LN_TUNING" else None
