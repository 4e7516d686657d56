"""The shared conformance suite run with ``init_lora_weights="eva"`` (LoRA's checks, EVA configs).

EVA adds no method, so its conformance run is LoRA's: :func:`eva_cases` maps LoRA's own config
strategies to ``init_lora_weights="eva"`` with a drawn ``eva_config`` on the tiny models whose
LoRA targets are linear layers (EVA refuses convolutions, as PEFT does), and
:func:`eva_cases_active` makes them the answer to ``peft_core_conformance_cases("LORA")``
inside a block. Every check applies: until :func:`initialize_lora_eva_weights` runs, an EVA
adapter is LoRA with ``B = 0``, and afterwards still (only ``A`` and the ranks change), so
identity at init holds; ``lora_bias`` is drawn off because PEFT refuses it with EVA.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from hypothesis import strategies as st

from peft_core import hookimpl

LINEAR_KINDS = ("tiny_llama", "tiny_gpt2", "tiny_bert", "tiny_t5")
PLUGIN_NAME = "peft-core-lora-eva-conformance"


def eva_configs() -> Any:
    from .config import EvaConfig

    return st.builds(EvaConfig, rho=st.sampled_from([1.0, 1.5, 2.0]), tau=st.sampled_from([0.9, 0.99]),
                     whiten=st.booleans(), adjust_scaling_factors=st.booleans())


def _to_eva(pair: tuple[Any, Any]) -> Any:
    config, eva = pair
    return dataclasses.replace(config, init_lora_weights="eva", eva_config=eva, lora_bias=False)


@lru_cache(maxsize=1)
def eva_cases() -> Any:
    from peft_core.conformance import MethodCases
    from peft_core_lora.conformance import lora_cases

    lora = lora_cases()
    return MethodCases(
        configs={kind: st.tuples(lora.configs[kind], eva_configs()).map(_to_eva) for kind in LINEAR_KINDS},
        invalid_configs=lora.invalid_configs,
        identity_at_init=lambda config: True,
        notes={**lora.notes, "init": "LoRA checks run with init_lora_weights='eva' (B = 0 until EVA fits A)"},
    )


class _EvaCasesPlugin:
    @staticmethod
    @hookimpl(tryfirst=True)
    def peft_core_conformance_cases(method: str) -> Any:
        return eva_cases() if method == "LORA" else None


@contextlib.contextmanager
def eva_cases_active() -> Iterator[None]:
    """Within the block, the LORA conformance checks draw EVA configs."""
    from peft_core.plugins import register_plugin, unregister_plugin

    register_plugin(_EvaCasesPlugin, name=PLUGIN_NAME)
    try:
        yield
    finally:
        unregister_plugin(PLUGIN_NAME)
