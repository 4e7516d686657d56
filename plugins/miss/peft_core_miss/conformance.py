"""MiSS's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn per tiny model over its ``nn.Linear`` layers, in all three variants:
balance (including ranks that leave a partial last column block), ``mini`` and ``bat``
(ranks dividing every targeted size). Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import MissConfig

#: nn.Linear leaf names of each tiny model of ``peft_core.conformance.models`` (sizes 16, 24, 32, 64)
TARGETS = {
    "mlp": ["lin0"],  # lin1 (24 → 5) is kept for modules_to_save
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
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
    def build(draw: Any) -> MissConfig:
        targets: Any = drawn_targets(draw, names, ALWAYS.get(kind))
        targets, extra = target_module_forms(draw, kind, targets)
        extra.update(model_kind_fields(draw, kind, TASK_TYPES))
        init = draw(st.sampled_from([True, True, False, "bat", "mini"]))
        return MissConfig(
            r=draw(st.sampled_from([2, 4, 8] if init == "bat" else [2, 3, 4, 5])),
            mini_r=draw(st.sampled_from([1, 2, 4, 8])),
            target_modules=targets,
            init_weights=init,
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "r": 0},
        {"target_modules": ["lin0"], "r": 17},  # more than in_features=16
        {"target_modules": ["lin0"], "r": 3, "init_weights": "bat"},  # 16 → 24 is not cut into 3 × 3 blocks
        {"target_modules": ["lin0"], "r": 2, "mini_r": 5, "init_weights": "mini"},  # 5 does not divide 24
        {"target_modules": ["lin0"], "init_weights": "pissa"},
        {"target_modules": ["lin0"], "mini_r": 0},
        {"target_modules": ["lin0"], "miss_dropout": 2.0},
        {"target_modules": ["lin0"], "bias": "all"},  # valid in PEFT's config, not implemented here
        {"target_modules": ["conv1d"]},  # an nn.Conv1d: not a layer MiSS adapts
        {"target_modules": "(unclosed"},
        {"task_type": "NOT_A_TASK"},
    ])


@lru_cache(maxsize=1)
def miss_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights is not False,
        notes={"identity_at_init": "not with init_weights=False (a random balance shard)"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return miss_cases() if method == "MISS" else None
