"""What the workloads run on: sizes, models built from configs, and the two libraries.

Models are always built from a config with a fixed seed (never downloaded), so each
library gets a bit-identical copy of the same model. :class:`Lib` hides the two import
paths behind one small interface; everything else in the harness is library-agnostic.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Sizes:
    """Every size a workload uses; ``FULL`` is the issue's, ``QUICK`` the CI smoke run's."""

    n_linear: int = 3000  # Linear(64, 64) layers in the nn.Sequential targeting workloads
    n_names: int = 1500  # explicit target names in the list-targeting workload
    linear_dim: int = 64
    hidden: int = 512
    layers: int = 4
    intermediate: int = 1376
    heads: int = 8
    vocab: int = 8192
    batch: int = 4
    seq: int = 128
    rank: int = 16
    mixed_adapters: int = 8
    mixed_batch: int = 8
    mixed_seq: int = 64
    n_load: int = 30
    save_rank: int = 64
    # repetitions (the median is reported); warmup runs are not counted
    reps_inject: int = 5
    reps_step: int = 11  # identical steps vary here by more than the train-step goal's 5 % margin
    reps_forward: int = 9
    reps_load: int = 3
    reps_save: int = 5
    reps_rss: int = 3  # pairs of children run concurrently (benchmarks.memory fixes malloc's mmap threshold)
    warmup: int = 2
    warmup_inject: int = 1  # the first build in a process also pays one-time costs (lazy imports, caches)


FULL = Sizes()
QUICK = Sizes(
    n_linear=60, n_names=30, hidden=32, layers=2, intermediate=64, heads=4, vocab=128, batch=2, seq=8,
    rank=4, mixed_adapters=4, mixed_batch=4, mixed_seq=8, n_load=4, save_rank=8,
    reps_inject=1, reps_step=1, reps_forward=1, reps_load=1, reps_save=1, reps_rss=1, warmup=1,
    warmup_inject=0,
)


def with_reps(sizes: Sizes, reps: int) -> Sizes:
    """The same sizes with every repetition count set to ``reps``."""
    fields = {f.name: reps for f in dataclasses.fields(sizes) if f.name.startswith("reps_")}
    return dataclasses.replace(sizes, **fields)


# -- models -------------------------------------------------------------------------------


def linear_stack(sizes: Sizes) -> nn.Sequential:
    """``nn.Sequential`` of ``n_linear`` ``Linear(64, 64)``: pure targeting/injection cost."""
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Linear(sizes.linear_dim, sizes.linear_dim) for _ in range(sizes.n_linear)))


def llama(sizes: Sizes, device: str = "cpu") -> nn.Module:
    """A Llama causal LM built from a config (random weights, seed 0), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=sizes.vocab,
        hidden_size=sizes.hidden,
        intermediate_size=sizes.intermediate,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        num_key_value_heads=sizes.heads,
        max_position_embeddings=max(sizes.seq, sizes.mixed_seq) * 2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device)
    return model.eval()


def token_batch(sizes: Sizes, batch: int, seq: int, device: str = "cpu", seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, sizes.vocab, (batch, seq), generator=gen).to(device)


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


# -- the two libraries --------------------------------------------------------------------


class Lib:
    """One library under test: ``get_peft_model``, ``LoraConfig``, ``PeftModel``."""

    def __init__(self, key: str) -> None:
        self.key = key
        if key == "core":
            import peft_core as mod
        else:
            import peft as mod
        self.mod = mod
        self.name = "peft-core" if key == "core" else "PEFT"

    def LoraConfig(self, **kwargs: Any) -> Any:  # noqa: N802 - mirrors the libraries' name
        return self.mod.LoraConfig(**kwargs)

    def get_peft_model(self, model: nn.Module, config: Any) -> Any:
        return self.mod.get_peft_model(model, config)

    def from_pretrained(self, model: nn.Module, path: str, **kwargs: Any) -> Any:
        return self.mod.PeftModel.from_pretrained(model, path, **kwargs)

    def has_dora(self) -> bool:
        """Whether this library can build DoRA adapters (peft-core: a plugin serves ``use_dora``)."""
        if self.key != "core":
            return True
        from peft_core.plugins import hook

        served: dict[str, str] = {}
        for flags in hook().peft_core_lora_variant_flags():
            served.update(flags or {})
        return "use_dora" in served


def libs() -> list[Lib]:
    return [Lib("core"), Lib("peft")]
