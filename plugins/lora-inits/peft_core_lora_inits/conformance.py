"""The shared conformance suite run with these initialisations (LoRA's checks, init-specific configs).

The inits add no method, so their conformance run is LoRA's: :func:`init_cases` maps LoRA's own
config strategies to ``init_lora_weights=<init>`` (even ranks for ``"orthogonal"``, a
``loftq_config`` for ``"loftq"``) on the tiny models whose LoRA targets are all linear layers,
and :func:`init_cases_active` makes them the answer to ``peft_core_conformance_cases("LORA")``
inside a block.

What holds, measured, not assumed:

* identity at init — PiSSA and OLoRA write the residual ``W - s·B·A`` into the base, so the
  model's output is unchanged (to float32 rounding); orthogonal starts with ``B·A = 0``; LoftQ
  does not (the base becomes its NF4/int8 values and the scaling is not folded in, as in PEFT).
  ``lora_bias`` is never drawn: it works only with ``init_lora_weights`` True or False (as in PEFT).
* checks that compare with the *pristine* base model — disabling, unloading, deleting every
  adapter, a second adapter beside a first — fail by design for inits that rewrite the base:
  the base they leave is the residual (:data:`EXPECTED_FAILURES` and :data:`NOT_RUN` say which, per init).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from peft_core import hookimpl

#: model kinds whose LoRA targets are all linear (these inits refuse convolutions, as PEFT does)
LINEAR_KINDS = ("tiny_llama", "tiny_gpt2", "tiny_bert", "tiny_t5")
#: kinds for the base-rewriting inits: without tiny_llama, from which backend plugins derive quantized
#: kinds that these inits refuse (PiSSA and LoftQ need a float base, as in PEFT); tiny_llama is covered
#: by the parity tests
FLOAT_ONLY_KINDS = ("tiny_gpt2", "tiny_bert", "tiny_t5")
LOFTQ_CONFIG = {"loftq_bits": 4, "loftq_iter": 1}
REWRITES_BASE = ("pissa", "olora", "loftq")
_RESIDUAL = "the init writes the residual into the base weight, so the base left behind is not the original model"
_TWICE = ("each of two adapters rewrites the base; one reloaded alone meets only its own residual "
          "(PEFT warns against PiSSA/OLoRA beside other adapters for this reason)")
_BASE_FAILURES = {
    "check_disable_adapter_gives_base_output": _RESIDUAL,
    "check_unload_returns_base": _RESIDUAL,
    "check_delete_adapter_frees_everything": _RESIDUAL,
}
#: init -> {check: reason}: strict expected failures of the suite (each fails on every drawn case)
EXPECTED_FAILURES = {
    "pissa": {**_BASE_FAILURES, "check_adapter_names_substrings_do_not_leak": _TWICE},
    "olora": {**_BASE_FAILURES, "check_adapter_names_substrings_do_not_leak": _TWICE},
    # NF4 values are a fixed point of NF4 quantization: a second LoftQ adapter leaves the base as it is
    "loftq": dict(_BASE_FAILURES),
}
#: init -> checks left out: they fail only on some drawn cases (a batch row routed to ``__base__``, the
#: residual model; a second init rewriting the base again) or, for LoftQ, never apply (no identity)
NOT_RUN = {
    "pissa": ("check_mixed_batch_matches_per_adapter", "check_set_adapter_switches"),
    "olora": ("check_mixed_batch_matches_per_adapter", "check_set_adapter_switches"),
    "loftq": ("check_mixed_batch_matches_per_adapter", "check_identity_at_init"),
}

def _with_init(init: str) -> Any:
    def convert(config: Any) -> Any:
        changes: dict[str, Any] = {"init_lora_weights": init, "lora_bias": False}  # refused with these inits
        if init == "orthogonal":
            changes["r"] = 2 * config.r
            changes["rank_pattern"] = {k: 2 * v for k, v in (config.rank_pattern or {}).items()}
        if init == "loftq":
            changes["loftq_config"] = dict(LOFTQ_CONFIG)
        return dataclasses.replace(config, **changes)

    return convert


def _identity(init: str) -> Any:
    return lambda config: init != "loftq"


@lru_cache(maxsize=None)
def init_cases(init: str) -> Any:
    from peft_core.conformance import MethodCases
    from peft_core_lora.conformance import lora_cases

    lora = lora_cases()
    return MethodCases(
        configs={kind: lora.configs[kind].map(_with_init(init))
                 for kind in (FLOAT_ONLY_KINDS if init in REWRITES_BASE else LINEAR_KINDS)},
        invalid_configs=lora.invalid_configs,
        identity_at_init=_identity(init),
        notes={**lora.notes, "init": f"LoRA checks run with init_lora_weights={init!r}",
               "identity_at_init": "not for LoftQ (quantized base)"},
    )


def _answering(init: str) -> type:
    class InitCasesPlugin:
        @staticmethod
        @hookimpl(tryfirst=True)
        def peft_core_conformance_cases(method: str) -> Any:
            return init_cases(init) if method == "LORA" else None

    return InitCasesPlugin


PLUGIN_NAME = "peft-core-lora-inits-conformance"


@contextlib.contextmanager
def init_cases_active(init: str) -> Iterator[None]:
    """Within the block, the LORA conformance checks draw configs with ``init_lora_weights=init``."""
    from peft_core.plugins import register_plugin, unregister_plugin

    register_plugin(_answering(init), name=PLUGIN_NAME)
    try:
        yield
    finally:
        unregister_plugin(PLUGIN_NAME)
