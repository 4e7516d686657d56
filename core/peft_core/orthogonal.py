"""Orthogonal-rotation building blocks shared by the OFT-family plugins (OFT, BOFT, …).

These methods all parameterise small orthogonal blocks through a skew-symmetric matrix
and the Cayley transform, then apply a block-diagonal rotation to the input features of
a layer (or, equivalently, to the input dimension of its weight when merging). Keeping
the pieces here means each plugin states *which* rotation it builds, and the numerics
(the Cayley solve, the truncated Neumann series, the block application) exist once.

Layout conventions: a block-diagonal rotation over ``n = nblocks · b`` features is held
as its ``(nblocks, b, b)`` blocks. Rotating an input row vector ``x`` means ``x @ R``;
the matching weight merge is ``W ← W @ Rᵀ`` (so ``W (x @ R)ᵀ`` is unchanged in value).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Modules the orthogonal methods adapt when ``target_modules`` is not given (the attention
#: projections, as Hugging Face PEFT picks for OFT/BOFT), by ``model.config.model_type``.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    **dict.fromkeys(
        ["llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "opt",
         "gptj", "bart", "mbart", "stablelm", "starcoder2", "olmo", "olmo2", "granite", "cohere", "gpt_neo"],
        ["q_proj", "v_proj"],
    ),
    **dict.fromkeys(["t5", "mt5", "umt5"], ["q", "v"]),
    **dict.fromkeys(["bert", "roberta", "xlm-roberta", "electra", "camembert", "layoutlm"], ["query", "value"]),
    **dict.fromkeys(["gpt2", "gpt_bigcode"], ["c_attn"]),
    **dict.fromkeys(["bloom", "gpt_neox", "falcon"], ["query_key_value"]),
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
}


def skew_from_upper(vec: torch.Tensor, block_size: int) -> torch.Tensor:
    """``(n, b(b-1)/2)`` strict-upper-triangle entries → ``(n, b, b)`` skew-symmetric matrices.

    Row-major upper-triangle order (``torch.triu_indices(b, b, 1)``), the order OFT stores.
    """
    rows, cols = torch.triu_indices(block_size, block_size, 1, device=vec.device)
    mat = vec.new_zeros(vec.shape[0], block_size, block_size)
    mat[:, rows, cols] = vec
    return mat - mat.transpose(-2, -1)


def upper_from_skew(mat: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`skew_from_upper`: the strict upper triangle of each block, row-major."""
    b = mat.shape[-1]
    rows, cols = torch.triu_indices(b, b, 1, device=mat.device)
    return mat[:, rows, cols]


def skew_part(mat: torch.Tensor) -> torch.Tensor:
    """``(A - Aᵀ) / 2``: the skew-symmetric part of full square blocks (BOFT stores full blocks)."""
    return 0.5 * (mat - mat.transpose(-2, -1))


def cayley(skew: torch.Tensor, neumann_terms: int | None = None) -> torch.Tensor:
    """Orthogonal blocks ``(I - Q)(I + Q)⁻¹`` from skew-symmetric blocks ``Q`` of shape ``(n, b, b)``.

    With ``neumann_terms`` the inverse is replaced by a truncated Neumann series, which
    is cheaper and only approximately orthogonal: ``I + 2Q + 2Q² + … + 2Q^{m} + Q^{m+1}``
    with ``m = max(2, terms - 2)`` (for ``terms > 2``), the exact sum Hugging Face PEFT ≥ 0.18
    uses so that trained adapters keep their meaning. The exact transform is computed in
    the skew's dtype, promoted to float32 for half precision (``linalg.solve`` needs it).
    """
    n, b, _ = skew.shape
    eye = torch.eye(b, device=skew.device, dtype=skew.dtype).expand(n, b, b)
    if neumann_terms is None:
        work = skew if skew.dtype in (torch.float32, torch.float64) else skew.float()
        eye_w = eye.to(work.dtype)
        # X (I + Q) = I - Q
        return torch.linalg.solve(eye_w + work, eye_w - work, left=False).to(skew.dtype)
    out = eye.clone()
    if neumann_terms <= 1:
        return out
    out = out + 2.0 * skew
    if neumann_terms == 2:
        return out
    power = skew
    for _ in range(2, max(2, neumann_terms - 2) + 1):
        power = torch.bmm(power, skew)
        out = out + 2.0 * power
    return out + torch.bmm(power, skew)


def project_skew_to_ball(skew: torch.Tensor, eps: float) -> torch.Tensor:
    """Constrained OFT (COFT): shrink each skew block to Frobenius norm ≤ ``eps / sqrt(n)``.

    Blocks already inside the ball are kept; the radius is shared out over the ``n``
    blocks so the whole rotation stays within ``eps`` of the identity.
    """
    radius = eps / (skew.shape[0] ** 0.5)
    norm = torch.linalg.matrix_norm(skew, keepdim=True)
    return torch.where(norm <= radius, skew, skew * (radius / norm))


def rotate_features(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """``x @ blockdiag(blocks)`` over the last dimension of ``x``, without building the big matrix.

    ``blocks`` is ``(nblocks, b, b)``; a single block (shared) is applied to every chunk.
    """
    b = blocks.shape[-1]
    shaped = x.reshape(*x.shape[:-1], x.shape[-1] // b, b)
    if blocks.shape[0] == 1:
        return (shaped @ blocks[0]).reshape(x.shape)
    return torch.einsum("...rk,rkc->...rc", shaped, blocks).reshape(x.shape)


def rotate_weight_input(weight: torch.Tensor, blocks: torch.Tensor, transpose: bool = True) -> torch.Tensor:
    """``W_flat @ blockdiag(blocks)ᵀ`` (``transpose``) or ``@ blockdiag(blocks)``, W's input dims flattened.

    ``weight`` is canonical ``(out, in, *kernel)``; its trailing dims are flattened
    channel-major, the order in which a convolution's patch features are rotated.
    """
    flat = weight.reshape(weight.shape[0], -1)
    rotated = rotate_features(flat, blocks.transpose(-2, -1) if transpose else blocks)
    return rotated.reshape(weight.shape)


def block_diagonal(blocks: torch.Tensor, nblocks: int | None = None) -> torch.Tensor:
    """The dense block-diagonal matrix of ``(n, b, b)`` blocks (a single block repeated ``nblocks`` times)."""
    if blocks.shape[0] == 1 and nblocks:
        blocks = blocks.expand(nblocks, *blocks.shape[1:])
    return torch.block_diag(*blocks.unbind(0))


def identity_block_dropout(blocks: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Multiplicative dropout of OFT/BOFT: in training, a ``p`` fraction of blocks becomes the identity.

    ``blocks`` is ``(D, b, b)`` or ``(N, D, b, b)``; with the latter one of the ``N``
    factors (chosen at random) is dropped, as the BOFT paper does. A single shared block
    (``D == 1``) is never dropped.
    """
    if not training or p <= 0:
        return blocks
    D, b = blocks.shape[-3], blocks.shape[-1]
    if D == 1:
        return blocks
    dropped = int(p * D)
    mask = torch.zeros(D, device=blocks.device, dtype=blocks.dtype)
    mask[torch.randperm(D, device=blocks.device)[:dropped]] = 1
    mask = mask.view(D, 1, 1)
    if blocks.dim() == 4:
        full = torch.zeros(blocks.shape[0], D, 1, 1, device=blocks.device, dtype=blocks.dtype)
        full[int(torch.randint(0, blocks.shape[0], (1,)))] = mask
        mask = full
    eye = torch.eye(b, device=blocks.device, dtype=blocks.dtype)
    return (1 - mask) * blocks + mask * eye


def nearest_divisor(n: int, wanted: int) -> int:
    """The divisor of ``n`` nearest to ``wanted`` (ties go down; ``wanted ≥ n`` gives ``n``).

    How OFT-family methods turn a requested block size or block count into one that
    tiles the layer, the same choice Hugging Face PEFT makes.
    """
    if wanted >= n:
        return n
    up = wanted
    while up <= n and n % up:
        up += 1
    down = wanted
    while down > 1 and n % down:
        down -= 1
    return down if wanted - down <= up - wanted else up


class RotatedConv2d:
    """Mixin for an adapter layer on ``nn.Conv2d`` whose adapter rotates patch features.

    A rotation of patch features cannot be applied to the image itself, so the convolution
    runs with the adapted weight (what merging writes). The layer provides
    :meth:`adapted_weight`; mix in before the method's ``AdapterLayer`` subclass.
    """

    def adapted_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        raise NotImplementedError

    def check_conv2d(self, module_name: str) -> None:
        from .errors import TargetModulesError
        from .layer import base_of

        d = self.description
        if d.conv_dim != 2:
            raise TargetModulesError(f"{self.method} adapts Conv2d, not {d.conv_dim}-d convolutions ({module_name!r}).")
        if any(v != 1 for v in d.extra.get("dilation", (1,))) or d.extra.get("groups", 1) != 1 \
                or getattr(base_of(self.base_layer), "padding_mode", "zeros") != "zeros":
            raise TargetModulesError(
                f"{self.method} does not adapt dilated, grouped or non-zero-padded convolutions ({module_name!r}).")

    def _conv(self, x: torch.Tensor, names: list[str]) -> torch.Tensor:
        from .layer import base_of, stacked_weight

        base = base_of(self.base_layer)
        weight = stacked_weight(self.base_layer)  # other methods' layers below this one included
        for name in names:
            weight = self.adapted_weight(weight, name)
        bias = base.bias
        return F.conv2d(x.to(weight.dtype), weight, None if bias is None else bias.to(weight.dtype),
                        base.stride, base.padding, base.dilation, base.groups).to(x.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._disable_adapters or self._routing is not None or self.merged or not self._active_adapters:
            return super().forward(x, *args, **kwargs)
        return self._conv(x, self._active_adapters)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        # rows of a mixed batch: the adapter replaces the base output, it does not add to it
        return self._conv(x, [adapter_name]).to(result.dtype)
