"""Trainable tokens' cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Each case trains every token row, in a drawn order (see ``_configs``). The MLP's embedding
is named explicitly; on the tiny Llama the default target (the input
embedding found through ``get_input_embeddings``) is drawn too. Hypothesis is imported only
when the suite asks.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import TrainableTokensConfig

TARGETS = {"mlp": ["emb"], "tiny_llama": ["embed_tokens"]}
VOCAB = 97  # peft_core.conformance.models.VOCAB


def _configs(st: Any, kind: str) -> Any:
    @st.composite
    def build(draw: Any) -> TrainableTokensConfig:
        # every row, in a drawn order: the suite's inputs may hold any token id, and a check that needs the
        # perturbed adapter to change the output must not draw tokens the adapter leaves alone (subsets of
        # the vocabulary are covered by this plugin's own tests and parity tests)
        indices = list(draw(st.permutations(range(VOCAB))))
        targets = TARGETS[kind] if kind == "mlp" or draw(st.booleans()) else None
        init = draw(st.sampled_from([True, True, False]))
        return TrainableTokensConfig(token_indices=indices, target_modules=targets, init_weights=init)

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"token_indices": []},
        {"token_indices": [3, 3], "target_modules": ["emb", "embed_tokens"]},
        {"token_indices": [-1]},
        {"token_indices": [2], "init_weights": "yes"},
        {"token_indices": [VOCAB + 5], "target_modules": ["emb", "embed_tokens"]},  # past the vocabulary
        {"token_indices": [1], "target_modules": "(unclosed"},
    ])


@lru_cache(maxsize=1)
def trainable_tokens_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: bool(config.init_weights),
        atol=1e-6,
        notes={"multi_active": "adapters active together must train disjoint tokens (refused otherwise, as in PEFT)",
               "tied heads": "a head tied to the embedding (tie_word_embeddings) uses the embedding's trained rows"},
    )


@lru_cache(maxsize=1)
def lora_tokens_cases() -> Any:
    """LoRA's own tiny-Llama configs, each with ``trainable_token_indices`` (a few tokens, list form)."""
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases
    from peft_core_lora.conformance import lora_cases

    lora = lora_cases()
    tokens = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=4, unique=True)
    configs = st.tuples(lora.configs["tiny_llama"], tokens).map(
        lambda pair: dataclasses.replace(pair[0], trainable_token_indices=pair[1]))
    return MethodCases(configs={"tiny_llama": configs}, invalid_configs=lora.invalid_configs,
                       identity_at_init=lora.identity_at_init,
                       notes={**lora.notes, "extension": "LoRA checks run with trainable_token_indices configs"})


@contextlib.contextmanager
def lora_tokens_cases_active() -> Iterator[None]:
    """Within the block, the LORA conformance checks draw LoRA configs with trainable tokens."""
    from peft_core_lora.conformance import lora_cases_replaced

    with lora_cases_replaced(lora_tokens_cases(), "peft-core-trainable-tokens-lora-conformance"):
        yield


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return trainable_tokens_cases() if method == "TRAINABLE_TOKENS" else None
