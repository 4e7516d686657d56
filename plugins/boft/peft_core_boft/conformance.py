"""BOFT's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Block sizes are drawn so they tile every targeted layer with every drawn butterfly factor
(BOFT, unlike OFT, refuses sizes that do not divide — as PEFT does).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import BOFTConfig

#: leaf names BOFT can target in each tiny model, and the input sizes (patch features for convs) of those
TARGETS = {
    "mlp": ["lin0"],  # 16
    "convnet": ["conv1", "head"],  # 8, 8 (conv0 has 27 patch features: no even block size fits)
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],  # 32
    "tiny_gpt2": ["c_attn", "c_proj"],  # 32
    "tiny_bert": ["query", "key", "value"],  # 32
}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
    )

    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> BOFTConfig:
        targets: Any = drawn_targets(draw, names)
        extra: dict[str, Any] = {}
        if kind == "tiny_llama" and draw(st.booleans()):
            extra["layers_to_transform"] = draw(st.sampled_from([0, [1], [0, 1]]))
        extra.update(model_kind_fields(draw, kind, TASK_TYPES))
        factors = draw(st.sampled_from([1, 2]))
        if draw(st.booleans()):
            sizes = {"boft_block_size": draw(st.sampled_from([2, 4])), "boft_block_num": 0}
        else:
            sizes = {"boft_block_size": 0, "boft_block_num": draw(st.sampled_from([2, 4]))}
        return BOFTConfig(
            target_modules=targets,
            **sizes,
            boft_n_butterfly_factor=factors,
            boft_dropout=draw(st.sampled_from([0.0, 0.5])),
            init_weights=draw(st.booleans()),
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    everywhere = {"target_modules": ["lin0"]}
    return st.sampled_from([
        {"boft_block_size": 4, "boft_block_num": 4},
        {"boft_block_size": 0, "boft_block_num": 0},
        {"boft_block_size": -2},
        {"boft_block_size": 2.0},
        {"boft_n_butterfly_factor": 0},
        {"boft_dropout": 1.0},
        {"bias": "oft_only"},
        {"init_weights": "gaussian"},
        {"target_modules": r".*lin0", "layers_to_transform": [0]},
        {"target_modules": ["lin0"], "layers_pattern": "layers"},
        {"task_type": "NOT_A_TASK"},
        {"target_modules": ["emb"]},
        {**everywhere, "boft_block_size": 3},  # 16 features
        {**everywhere, "boft_block_num": 0, "boft_block_size": 4, "boft_n_butterfly_factor": 4},
        {**everywhere, "boft_block_num": 0, "boft_block_size": 16, "boft_n_butterfly_factor": 2},
    ])


@lru_cache(maxsize=1)
def boft_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights is not False,
        notes={"identity_at_init": "not with init_weights=False (random rotation and scale)",
               "weighted_combine": "rotations do not add"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return boft_cases() if method == "BOFT" else None
