"""LoHa's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl
from peft_core.lycoris import CONFORMANCE_TARGETS, INVALID_FIELDS, conformance_configs

from .config import LoHaConfig


@lru_cache(maxsize=1)
def loha_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    def loha_fields(draw: Any) -> dict[str, Any]:
        return {"init_weights": draw(st.sampled_from([True, True, False]))}

    return MethodCases(
        configs={kind: conformance_configs(st, kind, LoHaConfig, loha_fields) for kind in CONFORMANCE_TARGETS},
        invalid_configs=st.sampled_from([*INVALID_FIELDS, {"init_weights": "lycoris"}]),
        identity_at_init=lambda config: config.init_weights is not False,
        notes={"identity_at_init": "not with init_weights=False (every factor random)",
               "weighted_combine": "not implemented for LoHa"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return loha_cases() if method == "LOHA" else None
