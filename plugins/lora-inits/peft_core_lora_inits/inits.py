"""PiSSA, OLoRA and orthogonal initialisation of one LoRA linear layer.

Each function fills ``lora_A``/``lora_B`` of one adapter in place. PiSSA and OLoRA take their
factors *from* the base weight and write the residual ``W - s·B·A`` back through
:func:`peft_core.weights.write_dense_weight`, so that at initialisation the adapted layer
still computes ``W x`` (up to float32 rounding). The base weight is read and written in the
canonical ``(out, in)`` layout, so transformers' ``Conv1D`` needs no special case here.

The arithmetic follows Hugging Face PEFT 0.21 step by step (same decompositions, same order
of products, float32 throughout, the same global-RNG draws) so a seed gives PEFT's adapter.
"""

from __future__ import annotations

import torch

from peft_core.errors import ConfigError
from peft_core.weights import dense_weight, write_dense_weight

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _set_factors(layer, adapter_name: str, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
    """Replace the factor values (their shapes are those LoRA created: ``(r, in)`` and ``(out, r)``)."""
    A, B = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
    if A.shape != lora_A.shape or B.shape != lora_B.shape:  # pragma: no cover - guarded by _rank_fits
        raise ConfigError(f"internal shape mismatch initialising {adapter_name!r}: {tuple(lora_A.shape)} vs {tuple(A.shape)}")
    with torch.no_grad():
        A.data = lora_A.contiguous()
        B.data = lora_B.contiguous()


def _rank_fits(layer, adapter_name: str, init: str) -> int:
    r = layer.r[adapter_name]
    d = layer.description
    if r > min(d.in_features, d.out_features):
        raise ConfigError(
            f"init_lora_weights={init!r} takes r={r} directions from a {d.out_features}x{d.in_features} weight, which "
            f"has only {min(d.in_features, d.out_features)}; lower r (or rank_pattern) for this layer."
        )
    return r


def has_quantized_base(layer) -> bool:
    """Whether the base weight is stored quantized (bitsandbytes parameters, integer storage)."""
    stored = getattr(layer.base_layer, "weight", None)
    if stored is None:
        return False
    return stored.dtype not in FLOAT_DTYPES or type(stored).__name__ in ("Params4bit", "Int8Params")


def _float_base(layer, init: str) -> tuple[torch.Tensor, torch.dtype]:
    """The base weight in float32 (canonical layout) and its dtype; quantized storage is refused, as PEFT does."""
    if has_quantized_base(layer):
        stored = layer.base_layer.weight
        raise ConfigError(
            f"init_lora_weights={init!r} needs a float32/float16/bfloat16 base weight, got {stored.dtype}; initialise "
            "on the unquantized model, then quantize the residual model."
        )
    weight = dense_weight(layer)
    return weight.to(torch.float32), weight.dtype


def _write_residual(layer, adapter_name: str, weight: torch.Tensor, dtype: torch.dtype) -> None:
    """Write ``W - s·B·A`` (PEFT multiplies ``(s·B) @ A``; same order, same rounding) in the base dtype."""
    B, A = layer.lora_B[adapter_name].weight, layer.lora_A[adapter_name].weight
    residual = weight - layer.scaling[adapter_name] * B @ A
    write_dense_weight(layer, residual.to(dtype))


def pissa_niter(init: str) -> int | None:
    """The iteration count of ``"pissa_niter_K"`` (``None`` for plain ``"pissa"``); a clear error otherwise."""
    if init == "pissa":
        return None
    prefix = "pissa_niter_"
    tail = init[len(prefix):] if init.startswith(prefix) else ""
    if not tail.isdigit():
        raise ConfigError(f"init_lora_weights={init!r}: use 'pissa' or 'pissa_niter_<iterations>', e.g. 'pissa_niter_4'.")
    return int(tail)


@torch.no_grad()
def pissa_init(layer, adapter_name: str, init: str) -> None:
    """PiSSA: the top-``r`` singular triplets become the factors, the rest stays in the base.

    ``"pissa"`` runs a full SVD; ``"pissa_niter_K"`` the randomized ``torch.svd_lowrank`` with ``K``
    subspace iterations (faster on big weights, draws from the global RNG). The singular values
    are divided by the LoRA scaling so that ``s·B·A`` is exactly the principal part.
    """
    niter = pissa_niter(init)
    r = _rank_fits(layer, adapter_name, init)
    weight, dtype = _float_base(layer, init)
    scaling = layer.scaling[adapter_name]
    if niter is None:
        U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
        Ur, Sr, Vhr = U[:, :r], S[:r] / scaling, Vh[:r]
    else:
        Ur, Sr, V = torch.svd_lowrank(weight, r, niter=niter)
        Sr, Vhr = Sr / scaling, V.t()
    root = torch.diag(torch.sqrt(Sr))
    _set_factors(layer, adapter_name, root @ Vhr, Ur @ root)
    _write_residual(layer, adapter_name, weight, dtype)


@torch.no_grad()
def olora_init(layer, adapter_name: str, init: str = "olora") -> None:
    """OLoRA: ``W = Q R``; the first ``r`` columns of ``Q`` become B, the first ``r`` rows of ``R`` become A."""
    r = _rank_fits(layer, adapter_name, init)
    dense = dense_weight(layer)  # quantized bases are fine: the backend dequantizes and requantizes
    weight = dense.to(torch.float32)
    Q, R = torch.linalg.qr(weight)
    _set_factors(layer, adapter_name, R[:r], Q[:, :r])
    _write_residual(layer, adapter_name, weight, dense.dtype)


@torch.no_grad()
def orthogonal_init(layer, adapter_name: str, init: str = "orthogonal") -> None:
    """Orthogonal: A's rows and B's columns are projections onto two halves of one random orthogonal basis.

    ``B·A`` then starts at zero (the two halves are orthogonal) while neither factor is zero,
    so both receive gradients from the first step. The base weight is left alone.
    """
    r = layer.r[adapter_name]
    if r % 2:
        raise ConfigError(f"init_lora_weights='orthogonal' needs an even rank, got r={r}; use an even r (and rank_pattern).")
    d = layer.description
    Q, _ = torch.linalg.qr(torch.randn(r, r))
    lora_A = torch.randn(d.in_features, r // 2).mm(Q[0::2, :]).T / 10.0
    lora_B = torch.randn(r // 2, d.out_features).T.mm(Q[1::2, :]) / 10.0
    dtype = dense_weight(layer).dtype
    _set_factors(layer, adapter_name, lora_A.to(dtype), lora_B.to(dtype))
