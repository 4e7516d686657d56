"""BOFT layers: input features rotated by a butterfly product of orthogonal block-diagonal factors.

``B = M_{m-1} ⋯ M_0`` with ``M_i = P_i · blockdiag(cayley(skew(R_i))) · P_iᵀ``; ``P_0`` is
the identity and ``P_i`` interleaves half-blocks ``2^i`` apart, so ``m`` factors mix every
feature with ``block_size · 2^(m-1)`` others. Each output row is then scaled by ``boft_s``:

    y = s ⊙ (W Bᵀ x) + b            merge: W ← s ⊙ (W Bᵀ)      unmerge: W ← (W / s) B

All of it is plain PyTorch (no CUDA extension), for any number of butterfly factors.
Linear layers rotate the input and call the base module; a convolution rotates its
patch features, so it runs with the merged-form weight.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from peft_core.errors import ConfigError
from peft_core.layer import AdapterLayer, base_of
from peft_core.orthogonal import (
    RotatedConv2d,
    block_diagonal,
    cayley,
    identity_block_dropout,
    rotate_weight_input,
    skew_part,
)
from peft_core.weights import CONV, LINEAR, LayerDescription, dense_weight


def butterfly_permutation(n: int, nblocks: int, half: int, factors: int) -> torch.Tensor:
    """Indices ``p`` with ``(P x)[k] = x[p[k]]``: within chunks of ``n / nblocks``, even half-blocks then odd."""
    if factors == 0:
        return torch.arange(n)
    if nblocks * half * 2 > n:
        raise ConfigError(f"cannot build a butterfly of {nblocks} blocks of half-size {half} over {n} features.")
    chunk = n // nblocks
    halves = torch.arange(chunk // half)
    order = torch.cat([halves[0::2], halves[1::2]])
    within = (order[:, None] * half + torch.arange(half)).reshape(-1)
    return (torch.arange(0, n, chunk)[:, None] + within).reshape(-1)


def block_layout(n: int, config: Any, where: str) -> tuple[int, int]:
    """``(block_size, block_num)`` for ``n`` rotated features, or a :class:`ConfigError` saying why not."""
    extra = config.boft_n_butterfly_factor - 1
    size, num = config.boft_block_size, config.boft_block_num
    if num:
        if n % num:
            raise ConfigError(f"{where}: {n} features are not divisible by boft_block_num={num}.")
        if extra and (extra > int(math.log2(num)) or num % (2 ** extra)):
            raise ConfigError(f"{where}: boft_block_num={num} does not allow boft_n_butterfly_factor="
                              f"{extra + 1} (it must be a multiple of 2^(factor-1)).")
        size = n // num
    else:
        if n % size:
            raise ConfigError(f"{where}: {n} features are not divisible by boft_block_size={size}.")
        if extra and n % (size * 2 ** extra):
            raise ConfigError(f"{where}: {n} features do not fit boft_block_size={size} with "
                              f"boft_n_butterfly_factor={extra + 1} (need a multiple of size·2^(factor-1)).")
        num = n // size
    if extra and (num % 2 or size % 2):
        raise ConfigError(f"{where}: with butterfly factors > 1 block size ({size}) and block count ({num}) must be even.")
    return size, num


class BOFTLayer(AdapterLayer):
    """What BOFT Linear and Conv2d layers share: the butterfly, the scale, merging."""

    method = "BOFT"
    adapter_layer_names = ("boft_R", "boft_s")
    other_param_names = ("boft_block_size", "boft_block_num", "boft_dropout", "boft_perms")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.boft_R, self.boft_s = nn.ParameterDict(), nn.ParameterDict()

    def rotated_features(self) -> int:
        return self.description.in_features * math.prod(self.description.kernel_size)

    def scale_shape(self) -> tuple[int, int]:
        return (self.description.out_features, 1)

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        n = self.rotated_features()
        size, num = block_layout(n, config, repr(module_name))
        factors = config.boft_n_butterfly_factor
        self.boft_perms[adapter_name] = [
            butterfly_permutation(n, num // 2 ** i, size // 2, factors - 1) for i in range(factors)]
        device = self.description.device
        R = torch.zeros(factors, num, size, size, device=device)
        s = torch.ones(self.scale_shape(), device=device)
        if config.init_weights is False:
            nn.init.normal_(R, mean=0.0, std=0.1)
            nn.init.normal_(s, mean=1.0, std=0.1)
        self.boft_R[adapter_name] = nn.Parameter(R)
        self.boft_s[adapter_name] = nn.Parameter(s)
        self.boft_block_size[adapter_name], self.boft_block_num[adapter_name] = size, num
        self.boft_dropout[adapter_name] = config.boft_dropout

    def butterfly(self, adapter_name: str, dropout: bool = False) -> torch.Tensor:
        """The dense ``(n, n)`` rotation ``B`` (``x ↦ x @ B``); ``dropout`` applies ``boft_dropout`` in training."""
        R = self.boft_R[adapter_name]
        factors, num, size, _ = R.shape
        blocks = cayley(skew_part(R.reshape(factors * num, size, size))).reshape(factors, num, size, size)
        if dropout:
            blocks = identity_block_dropout(blocks, self.boft_dropout[adapter_name], self.training)
        out = None
        for i, perm in enumerate(self.boft_perms[adapter_name]):
            perm = perm.to(R.device)
            mixed = block_diagonal(blocks[i])[perm][:, perm]
            out = mixed if out is None else mixed @ out
        return out

    def scale(self, adapter_name: str) -> torch.Tensor:
        """``boft_s`` as an ``(out, 1)`` column, whatever its stored layout."""
        return self.boft_s[adapter_name].reshape(-1, 1)

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        return self._scaled_rotation(weight, adapter_name, dropout=False)

    def _scaled_rotation(self, weight: torch.Tensor, adapter_name: str, dropout: bool) -> torch.Tensor:
        B = self.butterfly(adapter_name, dropout)
        rotated = rotate_weight_input(weight.to(B.dtype), B[None])
        return (rotated * self.scale(adapter_name).view(-1, *[1] * (weight.dim() - 1))).to(weight.dtype)

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        B = self.butterfly(adapter_name)  # orthogonal (exact Cayley): its inverse transpose is itself
        unscaled = weight.to(B.dtype) / self.scale(adapter_name).view(-1, *[1] * (weight.dim() - 1))
        return rotate_weight_input(unscaled, B[None], transpose=False).to(weight.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``merged − W``: BOFT is multiplicative; this additive view exists for tools that want a delta."""
        weight = dense_weight(self.base_layer)
        return self.merged_weight(weight, adapter_name) - weight


class BOFTLinear(BOFTLayer):
    """BOFT on ``nn.Linear`` and transformers ``Conv1D``: ``s ⊙ (base(x @ B) − b) + b``."""

    def _run(self, x: torch.Tensor, names: list[str], args: tuple = (), kwargs: dict | None = None) -> torch.Tensor:
        dtype = x.dtype
        scale = None
        for name in reversed(names):  # merging a then b gives W Baᵀ Bbᵀ: the input meets b first
            B = self.butterfly(name, dropout=True)
            x = x.to(B.dtype) @ B
            s = self.scale(name).reshape(-1)
            scale = s if scale is None else scale * s
        result = self.base_layer(x.to(dtype), *args, **(kwargs or {}))
        bias = getattr(base_of(self.base_layer), "bias", None)
        if bias is None:
            return (result * scale).to(dtype)
        return ((result - bias) * scale + bias).to(dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._disable_adapters or self._routing is not None or self.merged or not self._active_adapters:
            return super().forward(x, *args, **kwargs)
        return self._run(x, self._active_adapters, args, kwargs)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        # rows of a mixed batch: BOFT replaces the base output, it does not add to it
        return self._run(x, [adapter_name]).to(result.dtype)


class BOFTConv2d(RotatedConv2d, BOFTLayer):
    """BOFT on ``nn.Conv2d``: the convolution runs with ``s ⊙ (W Bᵀ)`` (patch features channel-major)."""

    def scale_shape(self) -> tuple[int, int]:
        return (1, self.description.out_features)  # PEFT stores a conv's scale as a row

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        self.check_conv2d(module_name)
        super().update_layer(adapter_name, config, module_name=module_name)

    def adapted_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        return self._scaled_rotation(weight, adapter_name, dropout=True)


_LAYERS = {LINEAR: BOFTLinear, CONV: BOFTConv2d}


def create_boft_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> BOFTLayer:
    """The ``MethodSpec.layer_factory`` of BOFT."""
    layer = _LAYERS[description.kind](target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
