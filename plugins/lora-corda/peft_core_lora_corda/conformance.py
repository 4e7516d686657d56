"""The shared conformance suite run with ``init_lora_weights="corda"`` (LoRA's checks, CorDA configs).

A CorDA adapter can only be created on a model that :func:`preprocess_corda` prepared. The
suite builds its own models, so inside :func:`corda_cases_active` a helper plugin prepares
each one as an adapter is added: its ``peft_core_validate_config`` hook (called with the
model before any layer is built) runs ``preprocess_corda`` with seeded random calibration
tokens whenever a CorDA config meets targets without a decomposition. Everything else is
the real path: the ``"corda"`` init builds ``A``/``B`` and writes the residual base.

Configs: LoRA's own strategies for ``tiny_llama`` mapped to ``init_lora_weights="corda"``
with a drawn ``corda_method`` (``lora_bias`` off: refused with CorDA, as in PEFT).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import torch
from hypothesis import strategies as st

from peft_core import hookimpl

KINDS = ("tiny_llama",)
PLUGIN_NAME = "peft-core-lora-corda-conformance"
CALIBRATION_SEED = 0


def _to_corda(pair: tuple[Any, str]) -> Any:
    from .config import CordaConfig

    config, method = pair
    return dataclasses.replace(config, init_lora_weights="corda", corda_config=CordaConfig(corda_method=method),
                               lora_bias=False)


@lru_cache(maxsize=1)
def corda_cases() -> Any:
    from peft_core.conformance import MethodCases
    from peft_core_lora.conformance import lora_cases

    lora = lora_cases()
    return MethodCases(
        configs={kind: st.tuples(lora.configs[kind], st.sampled_from(["ipm", "kpm"])).map(_to_corda) for kind in KINDS},
        invalid_configs=lora.invalid_configs,
        identity_at_init=lambda config: True,  # residual + adapter = the original weight
        notes={**lora.notes, "init": "LoRA checks run with init_lora_weights='corda' on preprocessed models"},
    )


def _calibrate(model: Any, config: Any) -> None:
    """Prepare ``model`` for ``config`` with random tokens, unless every target already is."""
    from peft_core.layer import base_of

    from .corda import corda_targets, preprocess_corda

    if all(hasattr(base_of(m), "eigens") for _, m in corda_targets(model, config)):
        return
    gen = torch.Generator().manual_seed(CALIBRATION_SEED)
    vocab = model.get_input_embeddings().num_embeddings
    batches = [torch.randint(1, vocab, (1, 24), generator=gen) for _ in range(4)]
    preprocess_corda(model, config, run_model=lambda: [model(input_ids=x) for x in batches])


class _CordaCasesPlugin:
    @staticmethod
    @hookimpl(tryfirst=True)
    def peft_core_conformance_cases(method: str) -> Any:
        return corda_cases() if method == "LORA" else None

    @staticmethod
    @hookimpl
    def peft_core_validate_config(config: Any, model: Any) -> list[str] | None:
        if getattr(config, "init_lora_weights", None) == "corda":
            _calibrate(model, config)
        return None


@contextlib.contextmanager
def corda_cases_active() -> Iterator[None]:
    """Within the block, the LORA conformance checks draw CorDA configs on calibrated models."""
    from peft_core.plugins import register_plugin, unregister_plugin

    register_plugin(_CordaCasesPlugin, name=PLUGIN_NAME)
    try:
        yield
    finally:
        unregister_plugin(PLUGIN_NAME)
