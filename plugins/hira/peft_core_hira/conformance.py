"""HiRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn per tiny model over the layers HiRA adapts there (linear, Conv1D,
ungrouped convolutions, embeddings), with ranks, rank patterns, the three inits, and the
model-type defaults on the tiny Llama. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import HiraConfig

#: leaf names HiRA can target in each tiny model of ``peft_core.conformance.models``
TARGETS = {
    "mlp": ["emb", "lin0", "conv1d"],  # lin1 is kept for modules_to_save
    "convnet": ["conv0", "conv1", "head", "emb"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny_bert": ["query", "key", "value", "dense"],
    "tiny_t5": ["q", "k", "v", "o", "wi", "wo"],
}
#: always targeted, so the adapter moves outputs by more than fp32 resolves
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
    def build(draw: Any) -> HiraConfig:
        targets: Any = drawn_targets(draw, names, ALWAYS.get(kind))
        targets, extra = target_module_forms(draw, kind, targets)
        if kind == "tiny_llama" and isinstance(targets, list) and draw(st.booleans()):
            extra["rank_pattern"] = {targets[0]: draw(st.integers(1, 3))}
        extra.update(model_kind_fields(draw, kind, TASK_TYPES))
        return HiraConfig(
            r=draw(st.integers(1, 4)),
            target_modules=targets,
            init_weights=draw(st.sampled_from([True, True, "gaussian", False])),
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "r": 0},
        {"target_modules": ["lin0"], "r": 2.5},
        {"target_modules": ["lin0"], "hira_dropout": 1.5},
        {"target_modules": ["lin0"], "init_weights": "pissa"},
        {"target_modules": ["lin0"], "fan_in_fan_out": "no"},
        {"target_modules": ["lin0"], "rank_pattern": {"lin0": -1}},
        {"target_modules": "(unclosed"},
        {"target_modules": r".*lin0", "layers_to_transform": [0]},
        {"target_modules": ["norm"]},  # a LayerNorm: not a layer HiRA adapts
        {"task_type": "NOT_A_TASK"},
        {"target_modules": None},  # the tiny MLP has no model type, hence no default targets
    ])


@lru_cache(maxsize=1)
def hira_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights is not False,
        notes={"identity_at_init": "not with init_weights=False (random A and B)"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return hira_cases() if method == "HIRA" else None
