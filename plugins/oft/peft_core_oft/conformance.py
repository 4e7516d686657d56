"""OFT's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import OFTConfig

#: leaf names OFT can target in each tiny model (linear and Conv2d layers only)
TARGETS = {
    "mlp": ["lin0"],
    "convnet": ["conv0", "conv1", "head"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny_bert": ["query", "key", "value"],
}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
    )

    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> OFTConfig:
        targets: Any = drawn_targets(draw, names)
        extra: dict[str, Any] = {}
        if kind == "tiny_llama" and draw(st.booleans()):
            extra["layers_to_transform"] = draw(st.sampled_from([0, [1], [0, 1]]))
        extra.update(model_kind_fields(draw, kind, TASK_TYPES))
        if draw(st.booleans()):
            sizes = {"r": draw(st.sampled_from([1, 2, 3, 4])), "oft_block_size": 0}
        else:
            sizes = {"r": 0, "oft_block_size": draw(st.sampled_from([3, 4, 5, 8]))}
        neumann = draw(st.booleans())
        return OFTConfig(
            target_modules=targets,
            **sizes,
            module_dropout=draw(st.sampled_from([0.0, 0.5])),
            coft=draw(st.booleans()),
            eps=draw(st.sampled_from([0.1, 1.0])),
            block_share=draw(st.booleans()),
            use_cayley_neumann=neumann,
            num_cayley_neumann_terms=draw(st.integers(2, 7)),
            init_weights=draw(st.booleans()),
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"r": 4, "oft_block_size": 4},
        {"r": 0, "oft_block_size": 0},
        {"r": -1, "oft_block_size": 0},
        {"oft_block_size": 2.5},
        {"oft_block_size": True},
        {"module_dropout": 1.0},
        {"bias": "some"},
        {"init_weights": "pissa"},
        {"eps": 0.0},
        {"num_cayley_neumann_terms": 0},
        {"target_modules": r".*lin0", "layers_to_transform": [0]},
        {"target_modules": ["lin0"], "layers_pattern": "layers"},
        {"task_type": "NOT_A_TASK"},
        {"target_modules": ["emb"]},
    ])


@lru_cache(maxsize=1)
def oft_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights is not False,
        notes={"identity_at_init": "not with init_weights=False (random rotation)",
               "weighted_combine": "rotations do not add"},
        atol=1e-4,
        rtol=1e-4,
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return oft_cases() if method == "OFT" else None
