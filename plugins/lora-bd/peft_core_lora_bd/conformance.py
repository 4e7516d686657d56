"""Block-diagonal LoRA's cases for the shared conformance suite.

BD-LoRA is not a method of its own (``peft_type`` stays ``"LORA"``), so its conformance run is
LoRA's checks fed with ``use_bdlora`` configs: :func:`bd_cases_active` makes :func:`bd_cases`
the answer to ``peft_core_conformance_cases("LORA")`` for the duration of a block. Each drawn
target gets a block-diagonal A or B (or, with ``match_strict=False``, stays plain LoRA); the
sizes of the tiny models are multiples of every drawn ``nblocks``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from .config import BdLoraConfig

TARGETS = {"mlp": ["lin0"], "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def _configs(st: Any, kind: str) -> Any:
    from peft_core_lora import LoraConfig

    @st.composite
    def build(draw: Any) -> Any:
        targets = sorted(draw(st.sets(st.sampled_from(TARGETS[kind]), min_size=1)))
        strict = draw(st.booleans())
        sides = {name: draw(st.sampled_from(["A", "B"] if strict else ["A", "B", None])) for name in targets}
        nblocks = draw(st.sampled_from([1, 2, 4]))
        bd = BdLoraConfig(target_modules_bd_a=[n for n, s in sides.items() if s == "A"],
                          target_modules_bd_b=[n for n, s in sides.items() if s == "B"],
                          nblocks=nblocks, match_strict=strict)
        return LoraConfig(target_modules=targets, r=nblocks * draw(st.integers(1, 2)),
                          lora_alpha=draw(st.sampled_from([4, 8])), use_rslora=draw(st.booleans()),
                          lora_dropout=draw(st.sampled_from([0.0, 0.1])),
                          init_lora_weights=draw(st.sampled_from([True, "gaussian"])), use_bdlora=bd)

    return build()


def _invalid(st: Any) -> Any:
    everywhere = {"target_modules": "all-linear"}
    return st.sampled_from([
        {**everywhere, "use_bdlora": {"target_modules_bd_a": ["no_such_layer"], "nblocks": 2}},  # strict: unmatched
        {**everywhere, "use_bdlora": {"target_modules_bd_a": ["lin"], "target_modules_bd_b": ["lin"]}},
        {**everywhere, "use_bdlora": {"target_modules_bd_a": ["lin", "proj"], "nblocks": 7}},  # 7 divides nothing
        {**everywhere, "use_bdlora": {"target_modules_bd_b": ["lin", "proj"], "nblocks": 2}, "lora_bias": True},
        {**everywhere, "use_bdlora": {"nblocks": 0, "match_strict": False}},
    ])


@lru_cache(maxsize=1)
def bd_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(configs={kind: _configs(st, kind) for kind in TARGETS}, invalid_configs=_invalid(st),
                       notes={"variant": "LoRA checks run with use_bdlora configs (block-diagonal A or B per target)"})


@contextlib.contextmanager
def bd_cases_active() -> Iterator[None]:
    """Within the block, the LORA conformance checks draw block-diagonal LoRA configs."""
    from peft_core_lora.conformance import lora_cases_replaced

    with lora_cases_replaced(bd_cases(), "peft-core-lora-bd-conformance"):
        yield
