"""VeRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn per tiny model from targets that exist there, with both ``save_projection``
modes, several keys and ranks, and GPT-2's Conv1D targets with ``fan_in_fan_out=True``; layers
of different sizes in one adapter exercise the slicing of the shared projections. Hypothesis
is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import VeraConfig

#: linear layers VeRA can target in each tiny model of ``peft_core.conformance.models``
TARGETS = {
    "mlp": ["lin0", "lin1"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
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
    def build(draw: Any) -> VeraConfig:
        chosen = drawn_targets(draw, names)
        # no "default" form: VeRA has no per-architecture default targets
        targets, extra = target_module_forms(draw, kind, chosen, forms=("list", "regex", "layers"))
        if kind == "mlp":
            extra["bias"] = draw(st.sampled_from(["none", "none", "vera_only", "all"]))
        extra.update(model_kind_fields(draw, kind, TASK_TYPES, save_module=kind == "mlp" and "lin1" not in chosen))
        return VeraConfig(
            target_modules=targets,
            r=draw(st.sampled_from([1, 2, 4, 8])),
            projection_prng_key=draw(st.sampled_from([0, 1, 12345])),
            save_projection=draw(st.booleans()),
            d_initial=draw(st.sampled_from([0.1, 0.5])),
            init_weights=draw(st.sampled_from([True, True, False])),
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "r": 0},
        {"target_modules": ["lin0"], "r": -2},
        {"target_modules": ["lin0"], "r": "8"},
        {"target_modules": ["lin0"], "vera_dropout": 1.5},
        {"target_modules": ["lin0"], "bias": "lora_only"},
        {"target_modules": ["lin0"], "save_projection": "yes"},
        {"target_modules": ["lin0"], "projection_prng_key": 1.5},
        {"target_modules": ["lin0"], "d_initial": "small"},
        {"target_modules": "(unclosed"},
        {"target_modules": ["lin0"], "layers_pattern": "layers"},
        {"task_type": "NOT_A_TASK"},
        # no default targets for these tiny models: target_modules must be given
        {"r": 4},
    ])


@lru_cache(maxsize=1)
def vera_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights,
        notes={"identity_at_init": "not with init_weights=False (vera_lambda_b starts at ones)"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return vera_cases() if method == "VERA" else None
