"""LoHa layers: the delta is the Hadamard product of two low-rank matrices.

Linear (and transformers ``Conv1D``) targets hold ``hada_w1_a`` ``(out, r)``, ``hada_w1_b``
``(r, in)`` and the same pair for ``w2``. Convolutions flatten their kernel into the input
side (``(r, in · k…)``), or — with ``use_effective_conv2d`` and a kernel larger than 1 —
keep it in Tucker cores ``hada_t1``/``hada_t2`` ``(r, r, kh, kw)`` with rank-first mode
factors ``hada_w*_a`` ``(r, out)`` and ``hada_w*_b`` ``(r, in)``. These are PEFT's shapes.
Everything else (dropout, running the delta, merging) is :class:`~peft_core.lycoris.LycorisLayer`'s.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from peft_core.lycoris import LycorisLayer, hadamard_product, kaiming, tucker_rebuild
from peft_core.weights import LayerDescription


class LoHaLayer(LycorisLayer):
    """LoHa on ``nn.Linear``, transformers ``Conv1D``, ``nn.Conv1d`` and ``nn.Conv2d``."""

    method = "LOHA"
    adapter_layer_names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")

    def create_parameters(self, adapter_name: str, r: int, config: Any) -> None:
        out, fan_in, *kernel = self.weight_shape
        new = self.new_parameter
        if self.uses_tucker(config):
            kernel_2d = self.tucker_kernel()
            for i in (1, 2):
                getattr(self, f"hada_w{i}_a")[adapter_name] = new(r, out)
                getattr(self, f"hada_w{i}_b")[adapter_name] = new(r, fan_in)
                getattr(self, f"hada_t{i}")[adapter_name] = new(r, r, *kernel_2d)
        else:
            flat_in = fan_in * math.prod(kernel)
            for i in (1, 2):
                getattr(self, f"hada_w{i}_a")[adapter_name] = new(out, r)
                getattr(self, f"hada_w{i}_b")[adapter_name] = new(r, flat_in)
        self.init_parameters(adapter_name, config.init_weights)

    def init_parameters(self, adapter_name: str, init_weights: bool) -> None:
        """He init everywhere; with ``init_weights`` ``hada_w2_b`` is zero so ``ΔW`` starts at 0.

        The draws go in PEFT's order (w1_a, w1_b, w2_a, w2_b, then the cores), so a seed gives
        the adapter PEFT would give.
        """
        with torch.no_grad():
            kaiming(self.hada_w1_a[adapter_name], self.hada_w1_b[adapter_name], self.hada_w2_a[adapter_name])
            if init_weights:
                nn.init.zeros_(self.hada_w2_b[adapter_name])
            else:
                kaiming(self.hada_w2_b[adapter_name])
            if adapter_name in self.hada_t1:
                kaiming(self.hada_t1[adapter_name], self.hada_t2[adapter_name])

    def factor_delta(self, adapter_name: str) -> torch.Tensor:
        w1a, w1b = self.hada_w1_a[adapter_name], self.hada_w1_b[adapter_name]
        w2a, w2b = self.hada_w2_a[adapter_name], self.hada_w2_b[adapter_name]
        scale = self.scaling[adapter_name]
        if adapter_name in self.hada_t1:
            first = tucker_rebuild(self.hada_t1[adapter_name], w1a, w1b)
            second = tucker_rebuild(self.hada_t2[adapter_name], w2a, w2b)
            return first * second * torch.tensor(scale)
        return hadamard_product(w1a, w1b, w2a, w2b, scale)


def create_loha_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> LoHaLayer:
    """The ``MethodSpec.layer_factory`` of LoHa."""
    layer = LoHaLayer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
