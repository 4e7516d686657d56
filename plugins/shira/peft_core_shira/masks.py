"""SHiRA mask functions: which entries of a weight an adapter trains.

A mask function is called as ``mask_fn(base_layer, r, **kwargs)`` — the signature Hugging Face
PEFT uses, so a custom function written for PEFT works here unchanged — and returns a 0/1 (or
boolean) tensor shaped like the weight, ``(out, in)``, with exactly ``r · (in + out)`` ones:
LoRA's parameter count at rank ``r``, spent on single entries instead of two factors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_core.errors import ConfigError


def shira_size(in_features: int, out_features: int, r: int) -> int:
    """How many entries a rank-``r`` SHiRA adapter trains in an ``(out, in)`` weight."""
    return r * (in_features + out_features)


def random_mask(base_layer: nn.Module, r: int, random_seed: int | None = None, **kwargs: Any) -> torch.Tensor:
    """``r (in + out)`` entries drawn uniformly without replacement.

    The draw comes from a private ``torch.Generator`` (seeded with ``random_seed`` when given,
    else torch's fixed default seed), never from the global RNG: the same layer shape and seed
    give the same mask in every process, and in PEFT.
    """
    # the layer's own sizes: a quantized weight is stored packed, not (out, in)
    out_features, in_features = base_layer.out_features, base_layer.in_features
    generator = torch.Generator()
    if random_seed is not None:
        generator.manual_seed(random_seed)
    chosen = torch.randperm(out_features * in_features, generator=generator)[: shira_size(in_features, out_features, r)]
    mask = torch.zeros(out_features * in_features, dtype=torch.bool)
    mask[chosen] = True
    return mask.view(out_features, in_features).to(base_layer.weight.device)


def mask_to_indices(mask: torch.Tensor, expected: int, module_name: str) -> torch.Tensor:
    """The ``(2, n)`` int32 (row, column) indices of a mask's ones, in row-major order, as PEFT stores them."""
    if mask.dim() != 2:
        raise ConfigError(f"the SHiRA mask for {module_name!r} must be 2-D (out, in), got shape {tuple(mask.shape)}.")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ConfigError(f"the SHiRA mask for {module_name!r} must hold only 0 and 1.")
    indices = torch.nonzero(mask == 1).T.to(torch.int32)
    if indices.shape[1] != expected:
        raise ConfigError(
            f"the SHiRA mask for {module_name!r} has {indices.shape[1]} ones but rank r needs exactly {expected} "
            "(r · (in + out)); make the mask function return that many."
        )
    return indices.cpu()
