"""DoRA's cases for the shared conformance suite.

DoRA is not a method of its own (``peft_type`` stays ``"LORA"``), so its conformance run is
LoRA's checks fed with ``use_dora=True`` configs: :func:`dora_cases` maps LoRA's own config
strategies (every target style, pattern, init and bias mode LoRA draws) to DoRA configs, and
:func:`dora_cases_active` makes them the answer to ``peft_core_conformance_cases("LORA")`` for
the duration of a block, so the suite's checks run unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from peft_core import hookimpl


def _to_dora(config: Any) -> Any:
    # lora_bias is refused with DoRA (as in Hugging Face PEFT); everything else LoRA draws is kept
    return dataclasses.replace(config, use_dora=True, lora_bias=False)


@lru_cache(maxsize=1)
def dora_cases() -> Any:
    from peft_core.conformance import MethodCases
    from peft_core_lora.conformance import lora_cases

    lora = lora_cases()
    return MethodCases(
        configs={kind: strategy.map(_to_dora) for kind, strategy in lora.configs.items()},
        invalid_configs=lora.invalid_configs,
        identity_at_init=lora.identity_at_init,
        notes={**lora.notes, "variant": "LoRA checks run with use_dora=True configs"},
    )


class _DoraCasesPlugin:
    """Answers the conformance hook for LORA with DoRA cases (ahead of LoRA's own answer)."""

    @staticmethod
    @hookimpl(tryfirst=True)
    def peft_core_conformance_cases(method: str) -> Any:
        return dora_cases() if method == "LORA" else None


PLUGIN_NAME = "peft-core-dora-conformance"


@contextlib.contextmanager
def dora_cases_active() -> Iterator[None]:
    """Within the block, the LORA conformance checks draw DoRA configs."""
    from peft_core.plugins import register_plugin, unregister_plugin

    register_plugin(_DoraCasesPlugin, name=PLUGIN_NAME)
    try:
        yield
    finally:
        unregister_plugin(PLUGIN_NAME)
