"""LoKr layers: the delta is a Kronecker product ``kron(w1, w2) · alpha / r``.

The output size is split as ``a · b`` and the input size as ``c · d`` (PEFT's
:func:`~peft_core.lycoris.factorization`); ``w1`` is ``(a, c)`` and ``w2`` ``(b, d)`` — for a
convolution ``w2`` also carries the kernel, ``(b, d, *k)``. A factor is stored whole
(``lokr_w1``, ``lokr_w2``) or as a rank-``r`` pair (``lokr_w1_a``/``_b``, ``lokr_w2_a``/``_b``)
when ``r`` is below half its larger side (for ``w1`` only with ``decompose_both``). A
decomposed conv ``w2`` either flattens the kernel into ``lokr_w2_b`` ``(r, d · k…)`` or, with
``use_effective_conv2d``, keeps it in a Tucker core ``lokr_t2`` ``(r, r, kh, kw)`` with
rank-first factors ``lokr_w2_a`` ``(r, b)``, ``lokr_w2_b`` ``(r, d)``. These are PEFT's shapes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from peft_core.lycoris import LycorisLayer, factorization, kaiming, kronecker_product, tucker_rebuild
from peft_core.weights import LayerDescription


class LoKrLayer(LycorisLayer):
    """LoKr on ``nn.Linear``, transformers ``Conv1D``, ``nn.Conv1d`` and ``nn.Conv2d``."""

    method = "LOKR"
    adapter_layer_names = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
    rescales_rank_dropout = False

    def kronecker_shapes(self, config: Any) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((a, b), (c, d))``: the output and input sizes split into the two Kronecker factors' sides."""
        out, fan_in, *_ = self.weight_shape
        return factorization(out, config.decompose_factor), factorization(fan_in, config.decompose_factor)

    def create_parameters(self, adapter_name: str, r: int, config: Any) -> None:
        (a, b), (c, d) = self.kronecker_shapes(config)
        kernel = self.description.kernel_size
        new = self.new_parameter
        if config.decompose_both and r < max(a, c) / 2:
            self.lokr_w1_a[adapter_name], self.lokr_w1_b[adapter_name] = new(a, r), new(r, c)
        else:
            self.lokr_w1[adapter_name] = new(a, c)
        if r >= max(b, d) / 2:
            self.lokr_w2[adapter_name] = new(b, d, *kernel)
        elif self.uses_tucker(config):
            self.lokr_t2[adapter_name] = new(r, r, *self.tucker_kernel())
            self.lokr_w2_a[adapter_name], self.lokr_w2_b[adapter_name] = new(r, b), new(r, d)
        else:
            self.lokr_w2_a[adapter_name], self.lokr_w2_b[adapter_name] = new(b, r), new(r, d * math.prod(kernel))
        self.init_parameters(adapter_name, config.init_weights)

    def init_parameters(self, adapter_name: str, init_weights: bool | str) -> None:
        """He init, with one side zero so ``ΔW`` starts at 0: ``w1`` (``True``) or ``w2`` (``"lycoris"``).

        A decomposed side is zeroed through one of its pair (``w1_a``, resp. ``w2_b``). Draws go in
        PEFT's order so a seed gives the adapter PEFT would give.
        """
        zero_w1, zero_w2 = init_weights is True, init_weights == "lycoris"
        with torch.no_grad():
            if adapter_name in self.lokr_w1:
                (nn.init.zeros_ if zero_w1 else kaiming)(self.lokr_w1[adapter_name])
            else:
                (nn.init.zeros_ if zero_w1 else kaiming)(self.lokr_w1_a[adapter_name])
                kaiming(self.lokr_w1_b[adapter_name])
            if adapter_name in self.lokr_w2:
                (nn.init.zeros_ if zero_w2 else kaiming)(self.lokr_w2[adapter_name])
            elif zero_w2:
                nn.init.zeros_(self.lokr_w2_b[adapter_name])
                kaiming(self.lokr_w2_a[adapter_name])
            else:
                kaiming(self.lokr_w2_a[adapter_name], self.lokr_w2_b[adapter_name])
            if adapter_name in self.lokr_t2:
                kaiming(self.lokr_t2[adapter_name])

    def factor_delta(self, adapter_name: str) -> torch.Tensor:
        if adapter_name in self.lokr_w1:
            w1 = self.lokr_w1[adapter_name]
        else:
            w1 = self.lokr_w1_a[adapter_name] @ self.lokr_w1_b[adapter_name]
        if adapter_name in self.lokr_w2:
            w2 = self.lokr_w2[adapter_name]
        elif adapter_name in self.lokr_t2:
            w2 = tucker_rebuild(self.lokr_t2[adapter_name], self.lokr_w2_a[adapter_name], self.lokr_w2_b[adapter_name])
        else:
            w2 = self.lokr_w2_a[adapter_name] @ self.lokr_w2_b[adapter_name]
        return kronecker_product(w1, w2, self.scaling[adapter_name])


def create_lokr_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> LoKrLayer:
    """The ``MethodSpec.layer_factory`` of LoKr."""
    layer = LoKrLayer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
