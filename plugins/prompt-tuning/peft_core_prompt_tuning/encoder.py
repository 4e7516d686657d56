"""``PromptEmbedding``: the virtual tokens are the parameters themselves (no reparameterization)."""

from __future__ import annotations

import math

import torch
from torch import nn

from peft_core.errors import ConfigError
from peft_core.prompt import EMBEDDINGS, PromptEncoder

from .config import PromptTuningConfig, PromptTuningInit


class PromptEmbedding(PromptEncoder):
    """``num_virtual_tokens × num_transformer_submodules`` rows of ``token_dim``, prepended to the input."""

    injects = EMBEDDINGS

    def __init__(self, config: PromptTuningConfig, word_embeddings: nn.Module) -> None:
        super().__init__()
        total = config.num_virtual_tokens * config.num_transformer_submodules
        self.embedding = nn.Embedding(total, config.token_dim)
        if config.inference_mode:  # the saved prompt is loaded next: no initialisation to compute
            return
        if config.prompt_tuning_init == PromptTuningInit.SAMPLE_VOCAB:
            ids = torch.randint(0, word_embeddings.num_embeddings, (total,), dtype=torch.long)
            self._start_from(word_embeddings, ids)
        elif config.prompt_tuning_init == PromptTuningInit.TEXT:
            ids = _text_token_ids(config)
            ids = (ids * math.ceil(total / len(ids)))[:total]  # repeated to length, or cut
            self._start_from(word_embeddings, torch.tensor(ids, dtype=torch.long))

    def _start_from(self, word_embeddings: nn.Module, ids: torch.Tensor) -> None:
        with torch.no_grad():
            rows = word_embeddings(ids.to(word_embeddings.weight.device)).detach().clone().float()
        self.embedding.weight = nn.Parameter(rows)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices)


def _text_token_ids(config: PromptTuningConfig) -> list[int]:
    """Token ids of the init text, from a local tokenizer only (peft-core never downloads)."""
    from transformers import AutoTokenizer

    kwargs = dict(config.tokenizer_kwargs or {})
    kwargs.pop("trust_remote_code", None)  # never run code from a tokenizer directory
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, local_files_only=True, **kwargs)
    except Exception as exc:
        raise ConfigError(f"cannot load the tokenizer at {config.tokenizer_name_or_path!r} for prompt_tuning_init="
                          f"'TEXT' ({type(exc).__name__}: {str(exc)[:200]}); give a local tokenizer directory.") from None
    ids = list(tokenizer(config.prompt_tuning_init_text)["input_ids"])
    if not ids:
        raise ConfigError("prompt_tuning_init_text tokenizes to no tokens; give some text.")
    return ids
