"""Block-diagonal LoRA as a LoRA variant: one of the two factors is block-diagonal.

BD-LoRA (Wang et al., 2025, https://arxiv.org/abs/2510.23346) makes A or B of a layer
block-diagonal with ``nblocks`` blocks. Served with tensor parallelism of degree
``nblocks``, each shard then computes its part of the adapter from its own slice of the
activations, with no extra communication; trained on one device it is simply LoRA with
fewer parameters in one factor.

A block-diagonal factor stores only its blocks, stacked: an ``(out, in / nblocks)`` weight
whose ``i``-th group of ``out / nblocks`` rows is the block applied to the ``i``-th slice of
the input. That is the tensor PEFT saves under the usual ``lora_A.weight`` /
``lora_B.weight`` keys. A block-diagonal A starts Kaiming-uniform (``a=0``, fan-in of one
block), a block-diagonal B at zero, as in PEFT.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_core.errors import ConfigError

from .config import as_bdlora_config


class BlockDiagonalLinear(nn.Module):
    """A bias-free linear map whose ``(out, in)`` matrix is block-diagonal; only the blocks are stored."""

    def __init__(self, in_features: int, out_features: int, nblocks: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.weight = nn.Parameter(torch.empty(out_features, in_features // nblocks))
        self.register_parameter("bias", None)  # LoRA reads ``lora_B.bias`` (lora_bias is refused with BD-LoRA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nb = self.nblocks
        blocks = self.weight.view(nb, self.out_features // nb, self.in_features // nb)
        sliced = x.reshape(*x.shape[:-1], nb, self.in_features // nb)
        return torch.einsum("...bi,boi->...bo", sliced, blocks).reshape(*x.shape[:-1], self.out_features)

    def dense(self) -> torch.Tensor:
        """The full ``(out, in)`` matrix, zeros off the diagonal blocks."""
        return torch.block_diag(*self.weight.chunk(self.nblocks, dim=0))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nblocks={self.nblocks}"


def _dense(factor: nn.Module) -> torch.Tensor:
    return factor.dense() if isinstance(factor, BlockDiagonalLinear) else factor.weight


class BdLoraVariant:
    """BD-LoRA for one adapter of one linear LoRA layer; ``side`` is the block-diagonal factor (or ``None``)."""

    adapter_layer_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.side: str | None = None

    def init(self, layer: Any, adapter_name: str, config: Any) -> None:
        bd = as_bdlora_config(config.use_bdlora)
        self.side = bd.side_for(layer.module_name)
        if self.side is None:  # match_strict=False and not listed: plain LoRA
            return
        d, r, nb = layer.description, layer.r[adapter_name], bd.nblocks
        n_in, n_out = (d.in_features, r) if self.side == "A" else (r, d.out_features)
        if n_in % nb or n_out % nb:
            raise ConfigError(f"block-diagonal LoRA-{self.side} of {layer.module_name!r} maps {n_in} to {n_out} "
                              f"features (rank r={r}), which {nb} blocks do not divide; choose nblocks (and r) "
                              "dividing both.")
        factor = BlockDiagonalLinear(n_in, n_out, nb)
        if self.side == "A":
            nn.init.kaiming_uniform_(factor.weight)
            layer.lora_A[adapter_name] = factor
        else:
            nn.init.zeros_(factor.weight)
            layer.lora_B[adapter_name] = factor

    def delta(self, layer: Any, adapter_name: str) -> torch.Tensor:
        """``s · B A`` as a dense ``(out, in)`` matrix."""
        A, B = layer.lora_A[adapter_name], layer.lora_B[adapter_name]
        return (_dense(B) @ _dense(A)) * layer.scaling[adapter_name]

    def apply(self, layer: Any, adapter_name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        A, B = layer.lora_A[adapter_name], layer.lora_B[adapter_name]
        hidden = A(layer.lora_dropout[adapter_name](x.to(A.weight.dtype)))
        return result + (B(hidden) * layer.scaling[adapter_name]).to(result.dtype)

    def merged_weight(self, layer: Any, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta(layer, adapter_name).to(weight.dtype)

    def unmerged_weight(self, layer: Any, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight - self.delta(layer, adapter_name).to(weight.dtype)
