"""MiSS layers: one small trainable shard shared across the shards of a frozen weight.

With the shard ``D`` (``miss_block``, as PEFT saves it):

- *balance* (default): ``D`` is ``(r, out)``; the update ``ΔW`` repeats ``Dᵀ`` across the
  ``⌈in / r⌉`` column blocks of ``W`` (the last one cut to size). The forward never builds
  ``ΔW``: summing the ``r``-wide chunks of the (zero-padded) input and multiplying by ``D``
  is the same product, in ``O(in + r·out)`` per row.
- *mini*: ``D`` is ``(r, mini_r)`` and is repeated along the outputs to ``(r, out)`` first.
- *bat*: ``D`` is ``(out/r, r, r)``, one block ``B_i`` per row of ``r × r`` weight blocks; each
  block becomes ``W_ij (I + B_i) + B_i``. The update depends on ``W``, so several active bat
  adapters compose (each sees the weight the previous one produced, as PEFT computes it) and
  unmerging solves ``W_ij = (W'_ij − B_i)(I + B_i)⁻¹`` (on a quantized base, where the inverse
  would amplify requantization error, the pre-merge weight is kept and restored instead). The
  forward adds ``(W' − W) x`` to the base layer's output and, as in PEFT, applies no dropout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft_core.errors import TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.lowrank import dropout_module
from peft_core.weights import LINEAR, LayerDescription, dense_weight


class MissLinear(AdapterLayer):
    """MiSS on ``nn.Linear``."""

    method = "MISS"
    adapter_layer_names = ("miss_block",)
    other_param_names = ("miss_r", "miss_mini_r", "miss_dropout", "miss_mode")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.miss_dropout = nn.ModuleDict()
        self.miss_block = nn.ParameterDict()
        #: bat adapters merged into a quantized base: the weight from before their merge
        self.__dict__["_weight_before_merge"] = {}

    # -- building -------------------------------------------------------------------------

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        n_in, n_out, r, mode = self.description.in_features, self.description.out_features, config.r, config.mode
        if r > n_in:
            raise TargetModulesError(f"MiSS r={r} is larger than in_features={n_in} of {module_name!r}; lower r.")
        if mode == "bat" and (n_in % r or n_out % r):
            raise TargetModulesError(
                f"MiSS init_weights='bat' cuts the weight into r × r blocks, but {module_name!r} is {n_in} → {n_out}, "
                f"not divisible by r={r}. Pick an r dividing both, or another variant."
            )
        if mode == "mini" and n_out % config.mini_r:
            raise TargetModulesError(
                f"MiSS init_weights='mini' repeats an (r, mini_r) shard along out_features={n_out} of "
                f"{module_name!r}, which mini_r={config.mini_r} does not divide."
            )
        shape = {"balance": (r, n_out), "bat": (n_out // r, r, r), "mini": (r, config.mini_r)}[mode]
        block = torch.zeros(shape)
        if config.init_weights is False:
            nn.init.kaiming_uniform_(block, a=math.sqrt(5))
        self.miss_r[adapter_name], self.miss_mini_r[adapter_name] = r, config.mini_r
        self.miss_mode[adapter_name] = mode
        self.miss_dropout[adapter_name] = dropout_module(config.miss_dropout)
        self.miss_block[adapter_name] = nn.Parameter(block)

    # -- balance / mini: an additive, weight-independent update ---------------------------

    def shared_shard(self, adapter_name: str) -> torch.Tensor:
        """The ``(r, out)`` shard every column block of the weight receives (mini repeats its ``mini_r`` columns)."""
        block = self.miss_block[adapter_name]
        if self.miss_mode[adapter_name] == "mini":
            return block.repeat(1, self.description.out_features // self.miss_mini_r[adapter_name])
        return block

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``ΔW`` for balance/mini; for bat, what merging would add to the *current* base weight."""
        if self.miss_mode[adapter_name] == "bat":
            weight = dense_weight(self.base_layer)
            return self.bat_weight(weight, adapter_name) - weight
        shard = self.shared_shard(adapter_name)
        n_in, r = self.description.in_features, shard.shape[0]
        return shard.T.repeat(1, -(-n_in // r))[:, :n_in]

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        if self.miss_mode[adapter_name] == "bat":  # alone (a mixed batch's rows): what it changes, no dropout
            base = dense_weight(self.base_layer)
            delta = self.bat_weight(base, adapter_name) - base.to(self.miss_block[adapter_name].dtype)
            return result + F.linear(x.to(delta.dtype), delta).to(result.dtype)
        shard = self.shared_shard(adapter_name)
        r = shard.shape[0]
        x = F.pad(x.to(shard.dtype), (0, -x.shape[-1] % r))
        chunks = self.miss_dropout[adapter_name](x).reshape(*x.shape[:-1], -1, r)
        return result + (chunks.sum(dim=-2) @ shard).to(result.dtype)

    # -- bat: a weight-dependent update ---------------------------------------------------

    def _blocks(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """``(out/r, in/r, r, r)`` view of ``weight``: block ``[i, j]`` is rows ``i·r…``, columns ``j·r…``."""
        r = self.miss_r[adapter_name]
        return weight.reshape(weight.shape[0] // r, r, weight.shape[1] // r, r).transpose(1, 2)

    def _unblocks(self, blocks: torch.Tensor) -> torch.Tensor:
        n_i, n_j, r, _ = blocks.shape
        return blocks.transpose(1, 2).reshape(n_i * r, n_j * r)

    def bat_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """Every block ``W_ij`` → ``W_ij (I + B_i) + B_i`` (``B_i`` shared along the row of blocks)."""
        shards = self.miss_block[adapter_name].unsqueeze(1)  # (out/r, 1, r, r)
        blocks = self._blocks(weight.to(shards.dtype), adapter_name)
        return self._unblocks(blocks @ shards + blocks + shards)

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        if self.miss_mode[adapter_name] == "bat":
            if self.description.quantized:
                # inverting (I + B) would amplify the requantization error of the merge; keep the weight instead
                self._weight_before_merge[adapter_name] = weight.detach().clone()
            return self.bat_weight(weight, adapter_name).detach().to(weight.dtype)
        return super().merged_weight(weight, adapter_name)

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        if self.miss_mode[adapter_name] != "bat":
            return super().unmerged_weight(weight, adapter_name)
        if adapter_name in self._weight_before_merge:
            return self._weight_before_merge.pop(adapter_name)
        shards = self.miss_block[adapter_name].detach()
        identity = torch.eye(shards.shape[-1], dtype=torch.float32, device=shards.device)
        inverse = torch.linalg.inv(identity + shards.float()).to(shards.dtype).unsqueeze(1)
        blocks = self._blocks(weight.to(shards.dtype), adapter_name)
        return self._unblocks((blocks - shards.unsqueeze(1)) @ inverse).to(weight.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        plain = self._disable_adapters or self._routing is not None or self.merged
        if plain or not any(self.miss_mode[n] == "bat" for n in self._active_adapters):
            return super().forward(x, *args, **kwargs)
        # bat updates depend on the weight: chain the active adapters on the weight, then add what the chain
        # changed to the base layer's own output (a quantized base keeps its own matmul; a zero update is exact)
        base = dense_weight(self.base_layer)
        weight = base
        for name in self._active_adapters:
            if self.miss_mode[name] == "bat":
                weight = self.bat_weight(weight, name)
            else:
                weight = weight.to(self.miss_block[name].dtype) + self.get_delta_weight(name)
        result = self.base_layer(x, *args, **kwargs)
        return result + F.linear(x.to(weight.dtype), weight - base.to(weight.dtype)).to(result.dtype)


def create_miss_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> MissLinear:
    """The ``MethodSpec.layer_factory`` of MiSS: ``nn.Linear`` only, as in PEFT."""
    if description.kind != LINEAR or description.fan_in_fan_out:
        what = "a Conv1D (transposed) layer" if description.kind == LINEAR else f"a {description.kind} layer"
        raise TargetModulesError(f"MiSS cannot adapt {module_name!r}, {what}; it adapts nn.Linear layers only.")
    layer = MissLinear(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
