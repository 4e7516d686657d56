"""IA³'s cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn per tiny model: targets that exist there, feed-forward modules drawn as
a subset of the targets (list form) or as a regex over full names, GPT-2's Conv1D targets
with ``fan_in_fan_out=True``. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import IA3Config

#: leaf names IA³ can target in each tiny model of ``peft_core.conformance.models``
TARGETS = {
    # lin1 is kept for modules_to_save
    "mlp": ["lin0", "conv1d"],
    "convnet": ["conv0", "conv1", "head"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny_bert": ["query", "key", "value", "dense"],
    "tiny_t5": ["q", "k", "v", "o", "wi", "wo"],
}
#: always targeted: with tiny random init, scaling only queries/keys moves the loss less than fp32 resolves
ALWAYS = {"tiny_llama": "v_proj", "tiny_bert": "value", "tiny_t5": "v"}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
    )

    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> IA3Config:
        targets: Any = drawn_targets(draw, names, ALWAYS.get(kind))
        feedforward: Any = sorted(draw(st.sets(st.sampled_from(targets), max_size=len(targets))))
        extra: dict[str, Any] = {}
        if kind == "tiny_llama":
            style = draw(st.sampled_from(["list", "regex", "layers", "default"]))
            if style == "regex":
                targets = r".*\.(" + "|".join(targets) + ")"
                feedforward = r".*\.(" + "|".join(feedforward) + ")" if feedforward else r"no_such_module"
            elif style == "layers":
                extra["layers_to_transform"] = draw(st.sampled_from([0, [1], [0, 1]]))
            elif style == "default":  # the model type's defaults for both lists
                targets = feedforward = None
        extra.update(model_kind_fields(draw, kind, TASK_TYPES))
        return IA3Config(
            target_modules=targets,
            feedforward_modules=feedforward,
            init_ia3_weights=draw(st.sampled_from([True, True, False])),
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "feedforward_modules": ["conv1d"]},
        {"target_modules": ["lin0"], "feedforward_modules": ["lin0", "head"]},
        {"target_modules": ["lin0"], "init_ia3_weights": "yes"},
        {"target_modules": ["lin0"], "fan_in_fan_out": 1},
        {"target_modules": "(unclosed", "feedforward_modules": []},
        {"target_modules": ["lin0"], "feedforward_modules": [3]},
        {"target_modules": r".*lin0", "feedforward_modules": [], "layers_to_transform": [0]},
        {"target_modules": ["lin0"], "feedforward_modules": [], "layers_pattern": "layers"},
        {"target_modules": ["lin0"], "feedforward_modules": [], "layers_to_transform": "first"},
        {"task_type": "NOT_A_TASK"},
        # unset feedforward_modules on a model type without defaults (the tiny MLP, the convnet)
        {"target_modules": ["lin0", "conv0"]},
    ])


@lru_cache(maxsize=1)
def ia3_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_ia3_weights,
        notes={"identity_at_init": "not with init_ia3_weights=False (random vectors)"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return ia3_cases() if method == "IA3" else None
