"""FourierFT's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs target linear layers of the tiny MLP, Llama (as a list, a regex, with
``layers_to_transform`` or from the model type) and GPT-2 (``Conv1D``, so ``fan_in_fan_out=True``)
with a small ``n_frequency`` that fits every target's spectrum, a drawn seed and scaling, and
sometimes a per-module ``n_frequency_pattern``. Identity at init
holds only with ``init_weights=True``: PEFT's default (``False``) starts from random
coefficients.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import FourierFTConfig

#: linear leaves FourierFT can target in each tiny model (the MLP's lin1 is kept for modules_to_save)
TARGETS = {
    "mlp": ["lin0"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
}
#: always targeted: changing only queries/keys of a tiny random model moves the loss too little to see
ALWAYS = {"tiny_llama": "v_proj", "tiny_gpt2": "c_fc"}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
        target_module_forms,
    )


    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> FourierFTConfig:
        targets = drawn_targets(draw, names, ALWAYS.get(kind))
        pattern = {}
        if draw(st.booleans()):
            pattern[draw(st.sampled_from(targets))] = draw(st.integers(1, 64))
        target_modules, extra = target_module_forms(draw, kind, targets)
        return FourierFTConfig(
            target_modules=target_modules,
            n_frequency=draw(st.integers(1, 96)),
            scaling=draw(st.sampled_from([1.0, 20.0, 150.0])),
            random_loc_seed=draw(st.integers(0, 2**31 - 1)),
            init_weights=draw(st.sampled_from([True, False])),
            n_frequency_pattern=pattern,
            **extra,
            **model_kind_fields(draw, kind, TASK_TYPES),
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "n_frequency": 0},
        {"target_modules": ["lin0"], "n_frequency": -5},
        {"target_modules": ["lin0"], "n_frequency": 2.5},
        {"target_modules": ["lin0"], "n_frequency": 16 * 24 + 1},  # more than lin0's spectrum holds
        {"target_modules": ["lin0"], "n_frequency_pattern": {"lin0": 0}},
        {"target_modules": ["lin0"], "random_loc_seed": None},
        {"target_modules": ["lin0"], "random_loc_seed": "seven"},
        {"target_modules": ["lin0"], "scaling": "high"},
        {"target_modules": ["lin0"], "bias": "lora_only"},
        {"target_modules": ["lin0"], "init_weights": "zeros"},
        {"target_modules": ["conv1d"]},  # a convolution: FourierFT adapts linear layers only
        {"target_modules": "(unclosed"},
        {"task_type": "NOT_A_TASK"},
    ])


@lru_cache(maxsize=1)
def fourierft_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights,
        notes={"identity_at_init": "only with init_weights=True; PEFT's default init_weights=False starts from "
                                   "standard-normal coefficients"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return fourierft_cases() if method == "FOURIERFT" else None
