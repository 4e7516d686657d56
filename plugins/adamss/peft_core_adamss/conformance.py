"""AdaMSS's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs target linear layers of the tiny MLP and Llama (in every target form) with a small SVD rank, a few subspaces
and a drawn subspace rank (fixed or dynamic), seed and init. Identity at init holds only
with ``init_weights="orthogonal"`` (every ``B`` starts at zero); ``None`` draws small random ``B``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import AdamssConfig

#: linear leaves AdaMSS can target in each tiny model (the MLP's lin1 is kept for modules_to_save)
TARGETS = {
    "mlp": ["lin0"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
#: always targeted: changing only queries/keys of a tiny random model moves the loss too little to see
ALWAYS = {"tiny_llama": "v_proj"}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
        target_module_forms,
    )


    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> AdamssConfig:
        targets = drawn_targets(draw, names, ALWAYS.get(kind), max_size=3)
        target_modules, extra = target_module_forms(draw, kind, targets)
        return AdamssConfig(
            target_modules=target_modules,
            r=draw(st.sampled_from([4, 8, 100])),
            num_subspaces=draw(st.integers(1, 4)),
            subspace_rank=draw(st.integers(1, 3)),
            use_dynamic_rank=draw(st.booleans()),
            init_weights=draw(st.sampled_from(["orthogonal", None])),
            random_seed=draw(st.integers(0, 1000)),
            **extra,
            **model_kind_fields(draw, kind, TASK_TYPES),
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "r": 0},
        {"target_modules": ["lin0"], "num_subspaces": 0},
        {"target_modules": ["lin0"], "subspace_rank": -1},
        {"target_modules": ["lin0"], "init_weights": "gaussian"},
        {"target_modules": ["lin0"], "svd_threshold": 2.0},
        {"target_modules": ["lin0"], "use_asa": True, "init_warmup": 10, "final_warmup": 10},
        {"target_modules": ["lin0"], "use_asa": True, "mask_interval": 0},
        {"target_modules": ["lin0"], "use_asa": True, "asa_target_subspaces": 0},
        {"target_modules": ["lin0"], "use_asa": True, "asa_schedule_exponent": 0.0},
        {"target_modules": ["lin0"], "asa_importance_beta": 1.5},
        {"target_modules": ["conv1d"]},  # a convolution: AdaMSS adapts linear layers only
        {"target_modules": "(unclosed"},
        {"task_type": "NOT_A_TASK"},
    ])


@lru_cache(maxsize=1)
def adamss_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights == "orthogonal",
        notes={"identity_at_init": "only with init_weights='orthogonal' (B starts at zero); None draws random B"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return adamss_cases() if method == "ADAMSS" else None
