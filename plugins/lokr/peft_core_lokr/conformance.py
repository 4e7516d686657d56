"""LoKr's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl
from peft_core.lycoris import CONFORMANCE_TARGETS, INVALID_FIELDS, conformance_configs

from .config import LoKrConfig


@lru_cache(maxsize=1)
def lokr_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    def lokr_fields(draw: Any) -> dict[str, Any]:
        return {
            "init_weights": draw(st.sampled_from([True, True, "lycoris", False])),
            "decompose_both": draw(st.booleans()),
            "decompose_factor": draw(st.sampled_from([-1, -1, 2, 3, 4])),
            "rank_dropout_scale": draw(st.booleans()),
        }

    invalid = [*INVALID_FIELDS, {"init_weights": "gaussian"}, {"decompose_factor": 0}, {"decompose_factor": 2.0},
               {"decompose_both": 1}, {"rank_dropout_scale": "no"}]
    return MethodCases(
        configs={kind: conformance_configs(st, kind, LoKrConfig, lokr_fields) for kind in CONFORMANCE_TARGETS},
        invalid_configs=st.sampled_from(invalid),
        identity_at_init=lambda config: config.init_weights is not False,
        notes={"identity_at_init": "not with init_weights=False (every factor random)",
               "weighted_combine": "not implemented for LoKr"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return lokr_cases() if method == "LOKR" else None
