"""Folding a saved adapter into its base model, checking it, and sampling text from the result.

Shared by ``peft-core merge`` (which writes the merged model to disk) and ``peft-core
train`` (which checks, at the end of a run, that the saved adapter reloads to the same
outputs and merges to the same outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import PeftConfig
from ..errors import LoadError
from .models import load_model, load_tokenizer


def max_logit_difference(a: nn.Module, b: nn.Module, input_ids: torch.Tensor) -> float:
    """Largest absolute difference between two models' outputs on the same tokens."""
    with torch.no_grad():
        out_a, out_b = a(input_ids=input_ids), b(input_ids=input_ids)
    la = getattr(out_a, "logits", out_a[0] if isinstance(out_a, tuple) else out_a)
    lb = getattr(out_b, "logits", out_b[0] if isinstance(out_b, tuple) else out_b)
    return (la.float() - lb.float()).abs().max().item()


def probe_ids(model: nn.Module, tokenizer: Any = None, text: str | None = None, length: int = 16) -> torch.Tensor:
    """Tokens to compare outputs on: ``text`` when given, else seeded random ids within the vocabulary."""
    if tokenizer is not None and text:
        return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:64] or [0]])
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 100
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))


def generate_text(model: nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` (deterministic, so demo output is reproducible)."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True)


@dataclass
class MergeResult:
    out: Path
    logit_difference: float | None
    generation: str | None


def merge_adapter(base: str | os.PathLike, adapter: str | os.PathLike, out: str | os.PathLike,
                  dtype: str = "float32", prompt: str | None = None, check: bool = True) -> MergeResult:
    """Load ``base`` and ``adapter``, merge, compare outputs with the unmerged model, save to ``out``."""
    from ..model import PeftModel

    config = PeftConfig.from_pretrained(adapter)
    task = getattr(config.task_type, "value", config.task_type)
    model = load_model(base, task_type=task, dtype=dtype, auto_mapping=config.auto_mapping)
    out = Path(out)
    if out.resolve() in (Path(base).resolve(), Path(adapter).resolve()):
        raise LoadError(f"OUT {str(out)!r} is the base or adapter directory; write the merged model elsewhere.")
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    try:
        tokenizer = load_tokenizer(base)
    except LoadError:
        tokenizer = None
    ids = probe_ids(model, tokenizer, prompt)
    can_probe = getattr(model, "main_input_name", "input_ids") == "input_ids"
    before = None
    if check and can_probe:
        with torch.no_grad():
            before = peft_model(input_ids=ids).logits.clone() if task in ("CAUSAL_LM", None) else None
    merged = peft_model.merge_and_unload(safe_merge=True)
    difference = None
    if before is not None:
        with torch.no_grad():
            difference = (merged(input_ids=ids).logits - before).abs().max().item()
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    generation = None
    if prompt and tokenizer is not None and hasattr(merged, "generate"):
        generation = generate_text(merged, tokenizer, prompt)
    return MergeResult(out, difference, generation)
