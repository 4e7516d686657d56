"""LoRA's half of ``add_weighted_adapter``: how A/B factors combine (``peft_core_combine_adapters``).

The core validates the request and owns the tensor math (:mod:`peft_core.merging`); this
module only knows LoRA's shapes. Every LoRA layer stores its factors as ``A`` with the rank
in dim 0 and ``B`` with the rank in dim 1 (linear, embedding and convolution alike), so one
code path serves all three:

* ``cat`` stacks the factors (rank = Σ ranks): exact, ``B_cat A_cat = Σ wᵢ sᵢ Bᵢ Aᵢ``;
* ``linear``, ``ties``, ``dare_*``, ``magnitude_prune`` combine A's and B's separately with
  ``√|wᵢ sᵢ|`` on each side (the sign on A only) — cheap, but only an approximation of the
  weighted sum of deltas since cross terms appear;
* ``*svd`` combine the full deltas ``sᵢ Bᵢ Aᵢ`` and refactorise the result at ``svd_rank``.

The combined adapter has ``lora_alpha = r`` (scaling 1), so its factors carry the scale.
"""

from __future__ import annotations

import dataclasses
import math
from functools import reduce
from typing import Any

import torch

from peft_core import hookimpl
from peft_core.errors import ConfigError, UnsupportedOperation
from peft_core.merging import Combination, svd_factors

from .config import LoraConfig
from .layer import LoraEmbedding, LoraLayer

#: combination types whose factors are combined entry by entry, so ranks must agree
_SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")


def factors(layer: LoraLayer, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The live ``(A, B)`` tensors of one adapter: A is ``(r, in, *k)``, B is ``(out, r, *1)``."""
    if isinstance(layer, LoraEmbedding):
        return layer.lora_embedding_A[adapter_name], layer.lora_embedding_B[adapter_name]
    return layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight


def _max_rank(config: LoraConfig) -> int:
    return max([config.r, *(config.rank_pattern or {}).values()])


def _union_targets(configs: list[LoraConfig]) -> Any:
    targets = [c.target_modules for c in configs]
    kinds = {type(t) for t in targets}
    if len(kinds) > 1:
        raise ConfigError(
            "the adapters' target_modules mix lists and regular expressions; combining them is not supported. "
            "Re-create the adapters with the same form of target_modules."
        )
    if isinstance(targets[0], str):
        if len(set(targets)) == 1:
            return targets[0]
        if any(t.lower() == "all-linear" for t in targets):
            raise ConfigError("cannot combine an 'all-linear' adapter with adapters targeting a regular expression.")
        return "|".join(f"({t})" for t in targets)
    return reduce(set.union, (set(t) for t in targets))


class LoraCombiner:
    """Combines LoRA adapters of one request; built by :func:`peft_core_combine_adapters`."""

    def __init__(self, configs: list[LoraConfig], combination: Combination) -> None:
        self.combination = combination
        ranks = [_max_rank(c) for c in configs]
        kind = combination.combination_type
        if kind in _SAME_RANK:
            if len(set(ranks)) != 1:
                raise ConfigError(
                    f"combination_type {kind!r} combines factors entry by entry, so all adapters need the same rank; "
                    f"got ranks {ranks}. Use 'cat' or an '*_svd' type for adapters of different ranks."
                )
            rank = ranks[0]
        elif kind == "cat":
            rank = sum(ranks)
        else:
            rank = combination.svd_rank or max(ranks)
        if any(getattr(c, "use_dora", False) for c in configs):
            raise UnsupportedOperation(
                "add_weighted_adapter cannot combine LoRA variants (use_dora): their magnitude vectors have no "
                "weighted combination. Merge them into the base with merge_and_unload instead."
            )
        self.rank = rank
        # scaling 1 (alpha = r, no rsLoRA): the combined factors carry every adapter's scale
        self.config = dataclasses.replace(
            configs[0],
            r=rank,
            lora_alpha=rank,
            use_rslora=False,
            target_modules=_union_targets(configs),
            rank_pattern={},
            alpha_pattern={},
            lora_bias=any(c.lora_bias for c in configs),
        )

    def combine(self, layer: LoraLayer, adapter_name: str, sources: list[tuple[str, float]]) -> None:
        if any(name in layer.lora_variant for name, _ in sources):
            raise UnsupportedOperation("add_weighted_adapter cannot combine adapters that use a LoRA variant (DoRA, …).")
        new_A, new_B = factors(layer, adapter_name)
        kind = self.combination.combination_type
        if kind == "cat":
            A = torch.cat([factors(layer, n)[0] * (w * layer.scaling[n]) for n, w in sources], dim=0)
            B = torch.cat([factors(layer, n)[1] for n, _ in sources], dim=1)
        elif self.combination.uses_svd:
            # random pruning draws per entry: combine in the base weight's storage layout
            # (transposed for Embedding and Conv1D) so a seed gives the same mask as in PEFT
            stored_t = isinstance(layer, LoraEmbedding) or layer.description.fan_in_fan_out
            deltas = [layer.get_delta_weight(n) for n, _ in sources]
            if stored_t:
                deltas = [d.T for d in deltas]
            delta = self.combination.combine(deltas, [w for _, w in sources])
            if stored_t:
                delta = delta.T
            c = self.combination
            B, A = svd_factors(delta.flatten(1), self.rank, c.svd_clamp, c.svd_full_matrices, c.svd_driver)
            A = A.reshape(A.shape[0], *new_A.shape[1:])
            B = B.reshape(*new_B.shape[:1], B.shape[1], *new_B.shape[2:])
        else:
            scaled = [w * float(layer.scaling[n]) for n, w in sources]
            weights_A = [math.copysign(math.sqrt(abs(s)), s) for s in scaled]
            weights_B = [math.sqrt(abs(s)) for s in scaled]
            A = self.combination.combine([factors(layer, n)[0] for n, _ in sources], weights_A)
            B = self.combination.combine([factors(layer, n)[1] for n, _ in sources], weights_B)
        new_A.zero_()
        new_B.zero_()
        new_A[: A.shape[0]] = A.to(new_A.dtype)
        new_B[:, : B.shape[1]] = B.to(new_B.dtype)
        self._combine_bias(layer, adapter_name, sources)

    @staticmethod
    def _combine_bias(layer: LoraLayer, adapter_name: str, sources: list[tuple[str, float]]) -> None:
        """``lora_bias`` adds ``sᵢ bᵢ`` to the output; the weighted sum of those is exact (scaling is 1)."""
        lora_B = getattr(layer, "lora_B", None)
        if lora_B is None or lora_B[adapter_name].bias is None:
            return
        bias = lora_B[adapter_name].bias
        bias.zero_()
        for name, weight in sources:
            other = lora_B[name].bias
            if other is not None:
                bias += other * (weight * layer.scaling[name])


@hookimpl
def peft_core_combine_adapters(spec: Any, configs: list[Any], combination: Combination) -> LoraCombiner | None:
    if spec.name != "LORA":
        return None
    return LoraCombiner(configs, combination)
