"""OFT layers: the input features of a Linear/Conv1D/Conv2d are rotated by ``blockdiag(R₁…R_r)``.

Each ``R_i = cayley(skew(θ_i))`` is orthogonal (approximately, with the Neumann series).
For a linear layer the rotation is applied to the input before the base module runs, so
the base (quantized or not) is used as is. A convolution sees its input through patches,
so rotating patch features is a rotation of the *weight's* input dimension; an OFT conv
runs the convolution with ``W Rᵀ``, which is exactly what merging writes.

Merge: ``W ← W Rᵀ`` (input dims flattened channel-major); unmerge: ``W ← W R⁻ᵀ``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from peft_core.layer import AdapterLayer
from peft_core.orthogonal import (
    RotatedConv2d,
    cayley,
    identity_block_dropout,
    nearest_divisor,
    project_skew_to_ball,
    rotate_features,
    rotate_weight_input,
    skew_from_upper,
    upper_from_skew,
)
from peft_core.weights import CONV, LINEAR, LayerDescription, dense_weight


class OFTRotation(nn.Module):
    """The trainable ``(r, b(b-1)/2)`` skew entries of one adapter (``r = 1`` when blocks are shared)."""

    def __init__(self, nblocks: int, block_size: int, config: Any) -> None:
        super().__init__()
        self.block_size, self.nblocks = block_size, nblocks
        self.coft, self.eps = config.coft, config.eps
        self.neumann_terms = config.num_cayley_neumann_terms if config.use_cayley_neumann else None
        stored = 1 if config.block_share else nblocks
        self.weight = nn.Parameter(torch.zeros(stored, block_size * (block_size - 1) // 2))
        if config.init_weights is False:
            nn.init.normal_(self.weight, mean=0.0, std=0.1)

    def blocks(self) -> torch.Tensor:
        """The orthogonal ``(r, b, b)`` blocks (``(1, b, b)`` when shared)."""
        skew = skew_from_upper(self.weight, self.block_size)
        if self.coft:
            # COFT keeps the stored parameters inside the eps-ball, as the paper's projected step
            with torch.no_grad():
                projected = project_skew_to_ball(skew, self.eps)
                self.weight.copy_(upper_from_skew(projected))
            skew = skew_from_upper(self.weight, self.block_size)
        return cayley(skew, self.neumann_terms)


class OFTLayer(AdapterLayer):
    """What OFT Linear and Conv2d layers share: block sizing, the rotation, merging."""

    method = "OFT"
    adapter_layer_names = ("oft_R",)
    other_param_names = ("r", "oft_block_size", "module_dropout")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.oft_R = nn.ModuleDict()

    def rotated_features(self) -> int:
        d = self.description
        n = d.in_features
        for k in d.kernel_size:
            n *= k
        return n

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        n = self.rotated_features()
        if config.r == 0:
            block_size = nearest_divisor(n, config.oft_block_size)
            if block_size != config.oft_block_size:
                warnings.warn(f"oft_block_size={config.oft_block_size} does not divide {n} features of {module_name!r}; "
                              f"using {block_size}.", UserWarning, stacklevel=2)
            r = n // block_size
        else:
            r = nearest_divisor(n, config.r)
            if r != config.r:
                warnings.warn(f"r={config.r} does not divide {n} features of {module_name!r}; using {r}.",
                              UserWarning, stacklevel=2)
            block_size = n // r
        self.oft_R[adapter_name] = OFTRotation(r, block_size, config).to(self.description.device)
        self.r[adapter_name] = r
        self.oft_block_size[adapter_name] = block_size
        self.module_dropout[adapter_name] = config.module_dropout

    def rotation_blocks(self, adapter_name: str) -> torch.Tensor:
        blocks = self.oft_R[adapter_name].blocks()
        return identity_block_dropout(blocks, self.module_dropout[adapter_name], self.training)

    def _blocks_fp32(self, adapter_name: str) -> torch.Tensor:
        rot = self.oft_R[adapter_name]
        if rot.weight.dtype in (torch.float16, torch.bfloat16):
            # half-precision Cayley/Neumann loses orthogonality; compute merges in float32
            with torch.no_grad():
                saved = rot.weight.data
                rot.weight.data = saved.float()
                try:
                    return rot.blocks()
                finally:
                    rot.weight.data = saved
        return rot.blocks()

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        blocks = self._blocks_fp32(adapter_name)
        return rotate_weight_input(weight.to(blocks.dtype), blocks).to(weight.dtype)

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        # the inverse, not the transpose: the Neumann series is only approximately orthogonal
        blocks = torch.linalg.inv(self._blocks_fp32(adapter_name).float())
        return rotate_weight_input(weight.float(), blocks).to(weight.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``W Rᵀ - W``: OFT is multiplicative; this additive view exists for tools that want a delta."""
        weight = dense_weight(self.base_layer)
        return self.merged_weight(weight, adapter_name) - weight


class OFTLinear(OFTLayer):
    """OFT on ``nn.Linear`` and transformers ``Conv1D``: ``base(x @ blockdiag(R))``."""

    def _rotate(self, x: torch.Tensor, adapter_name: str) -> torch.Tensor:
        blocks = self.rotation_blocks(adapter_name)
        return rotate_features(x.to(blocks.dtype), blocks)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._disable_adapters or self._routing is not None or self.merged:
            return super().forward(x, *args, **kwargs)
        dtype = x.dtype
        # merging adapters a, b gives W Raᵀ Rbᵀ: the input meets b's rotation first
        for name in reversed(self._active_adapters):
            x = self._rotate(x, name)
        return self.base_layer(x.to(dtype), *args, **kwargs)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        # used for the rows of a mixed batch: OFT replaces the base output, it does not add to it
        return self.base_layer(self._rotate(x, adapter_name).to(x.dtype)).to(result.dtype)


class OFTConv2d(RotatedConv2d, OFTLayer):
    """OFT on ``nn.Conv2d``: the convolution runs with the patch-rotated weight ``W Rᵀ``."""

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        self.check_conv2d(module_name)
        super().update_layer(adapter_name, config, module_name=module_name)

    def adapted_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        blocks = self.rotation_blocks(adapter_name)  # with module_dropout in training
        return rotate_weight_input(weight.to(blocks.dtype), blocks)


_LAYERS = {LINEAR: OFTLinear, CONV: OFTConv2d}


def create_oft_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> OFTLayer:
    """The ``MethodSpec.layer_factory`` of OFT."""
    layer = _LAYERS[description.kind](target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
