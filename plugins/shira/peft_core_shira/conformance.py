"""SHiRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn per tiny model over its ``nn.Linear`` layers (SHiRA adapts nothing else),
with random masks (seeded or not) and a custom mask function (every ``k``-th entry), so the
saved indices — not a regenerated mask — must carry the adapter through save and load.
Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import torch

from peft_core import hookimpl

from .config import ShiraConfig
from .masks import shira_size

#: nn.Linear leaf names of each tiny model of ``peft_core.conformance.models`` (ranks ≤ 3 fit every one)
TARGETS = {
    "mlp": ["lin0"],  # lin1 is kept for modules_to_save
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_bert": ["query", "key", "value", "dense"],
    "tiny_t5": ["q", "k", "v", "o", "wi", "wo"],
}
ALWAYS = {"tiny_llama": "v_proj", "tiny_bert": "value", "tiny_t5": "v"}


def strided_mask(base_layer: torch.nn.Module, r: int, **kwargs: Any) -> torch.Tensor:
    """A custom mask: evenly spaced entries, ``r (in + out)`` of them (not what any random draw gives)."""
    out_features, in_features = base_layer.out_features, base_layer.in_features
    total, size = out_features * in_features, shira_size(in_features, out_features, r)
    mask = torch.zeros(total)
    mask[torch.linspace(0, total - 1, size).long()] = 1
    return mask.view(out_features, in_features)


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
        target_module_forms,
    )


    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> ShiraConfig:
        targets: Any = drawn_targets(draw, names, ALWAYS.get(kind))
        targets, _ = target_module_forms(draw, kind, targets, ("list", "regex"))
        mask = draw(st.sampled_from(["random", "seeded", "custom"]))
        with warnings.catch_warnings():  # a custom mask_type warns until mask_fn is set, just below
            warnings.simplefilter("ignore", UserWarning)
            config = ShiraConfig(
                r=draw(st.integers(1, 3)),
                target_modules=targets,
                mask_type="custom_strided" if mask == "custom" else "random",
                random_seed=draw(st.integers(0, 2**16)) if mask == "seeded" else None,
                init_weights=draw(st.sampled_from([True, True, False])),
                **model_kind_fields(draw, kind, TASK_TYPES),
            )
        if mask == "custom":
            config.mask_fn = strided_mask
        return config

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"], "r": 0},
        {"target_modules": ["lin0"], "r": 10},  # 10 · (16 + 24) entries > 16 · 24
        {"target_modules": ["lin0"], "random_seed": "x"},
        {"target_modules": ["lin0"], "init_weights": 1},
        {"target_modules": ["lin0"], "mask_type": 3},
        {"target_modules": ["conv1d"]},  # an nn.Conv1d: not a layer SHiRA adapts
        {"target_modules": ["emb"]},
        {"target_modules": "(unclosed"},
        {"task_type": "NOT_A_TASK"},
    ])


@lru_cache(maxsize=1)
def shira_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_weights,
        notes={"identity_at_init": "not with init_weights=False (random values at the masked entries)"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return shira_cases() if method == "SHIRA" else None
