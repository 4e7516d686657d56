"""DeLoRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs target linear layers of the tiny MLP, Llama (in every target form) and BERT with a drawn rank, λ, init and
dropout, and sometimes per-module ``rank_pattern``/``lambda_pattern``. Identity at init holds
only with ``init_weights=True`` (``B`` starts at zero).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import DeloraConfig

#: linear leaves DeLoRA can target in each tiny model (the MLP's lin1 is kept for modules_to_save)
TARGETS = {
    "mlp": ["lin0"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_bert": ["query", "key", "value", "dense"],
}
#: always targeted: changing only queries/keys of a tiny random model moves the loss too little to see
ALWAYS = {"tiny_llama": "v_proj", "tiny_bert": "value"}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
        target_module_forms,
    )


    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> DeloraConfig:
        targets = drawn_targets(draw, names, ALWAYS.get(kind))
        target_modules, extra = target_module_forms(draw, kind, targets)
        if draw(st.booleans()):
            extra["rank_pattern"] = {draw(st.sampled_from(targets)): draw(st.integers(1, 6))}
        if draw(st.booleans()):
            extra["lambda_pattern"] = {draw(st.sampled_from(targets)): draw(st.sampled_from([0.5, 3, 40.0]))}
        return DeloraConfig(
            target_modules=target_modules,
            r=draw(st.integers(1, 8)),
            delora_lambda=draw(st.sampled_from([1, 15, 4.5])),
            module_dropout=draw(st.sampled_from([0.0, 0.0, 0.3])),
            init_weights=draw(st.booleans()),
            **extra,
            **model_kind_fields(draw, kind, TASK_TYPES),
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "r": 0},
        {"target_modules": ["lin0"], "r": 2.0},
        {"target_modules": ["lin0"], "delora_lambda": "big"},
        {"target_modules": ["lin0"], "module_dropout": 1.0},
        {"target_modules": ["lin0"], "module_dropout": -0.1},
        {"target_modules": ["lin0"], "bias": "lora_only"},
        {"target_modules": ["lin0"], "init_weights": "gaussian"},
        {"target_modules": ["lin0"], "rank_pattern": {"lin0": 0}},
        {"target_modules": ["lin0"], "lambda_pattern": {"lin0": "x"}},
        {"target_modules": ["conv1d"]},  # a convolution: DeLoRA adapts linear layers only
        {"target_modules": "(unclosed"},
        {"task_type": "NOT_A_TASK"},
    ])


@lru_cache(maxsize=1)
def delora_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights,
        notes={"identity_at_init": "only with init_weights=True (B starts at zero); False makes both factors random"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return delora_cases() if method == "DELORA" else None
