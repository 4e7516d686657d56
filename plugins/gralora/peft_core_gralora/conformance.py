"""GraLoRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn per tiny model over its linear (and GPT-2 Conv1D) layers, with block counts
``gralora_k`` dividing every targeted size there, ranks ``r`` a multiple of ``k``, with and
without the hybrid LoRA part. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import GraloraConfig

#: linear leaf names of each tiny model of ``peft_core.conformance.models`` (all sizes divisible by 4)
TARGETS = {
    "mlp": ["lin0"],  # lin1 (24 → 5) has no block split; it is kept for modules_to_save
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny_bert": ["query", "key", "value", "dense"],
    "tiny_t5": ["q", "k", "v", "o", "wi", "wo"],
}
ALWAYS = {"tiny_llama": "v_proj", "tiny_bert": "value", "tiny_t5": "v"}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
        target_module_forms,
    )


    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> GraloraConfig:
        targets: Any = drawn_targets(draw, names, ALWAYS.get(kind))
        targets, extra = target_module_forms(draw, kind, targets)
        extra.update(model_kind_fields(draw, kind, TASK_TYPES))
        k = draw(st.sampled_from([1, 2, 4]))
        return GraloraConfig(
            r=k * draw(st.integers(1, 2)),
            gralora_k=k,
            hybrid_r=draw(st.sampled_from([0, 0, 1, 2])),
            alpha=draw(st.sampled_from([1, 4, 8])),
            target_modules=targets,
            init_weights=draw(st.sampled_from([True, True, False])),
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "r": 3, "gralora_k": 2},  # r not divisible by k
        {"target_modules": ["lin0"], "gralora_k": 0},
        {"target_modules": ["lin0"], "r": 0},
        {"target_modules": ["lin0"], "hybrid_r": -1},
        {"target_modules": ["lin0"], "gralora_dropout": -0.1},
        {"target_modules": ["lin0"], "bias": "lora_only"},
        {"target_modules": ["lin0"], "bias": "all"},  # valid in PEFT's config, not implemented here
        {"target_modules": ["lin0"], "r": 6, "gralora_k": 3},  # 16 → 24 does not split into 3 × 3 blocks
        {"target_modules": ["lin1"], "r": 2, "gralora_k": 2},  # 24 → 5 does not split into 2 × 2 blocks
        {"target_modules": ["emb"]},  # an embedding: GraLoRA adapts linear layers only
        {"target_modules": ["lin0"], "init_weights": "gaussian"},
        {"task_type": "NOT_A_TASK"},
    ])


@lru_cache(maxsize=1)
def gralora_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights,
        notes={"identity_at_init": "not with init_weights=False (random B factors)"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return gralora_cases() if method == "GRALORA" else None
