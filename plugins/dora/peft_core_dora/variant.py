"""DoRA as a LoRA variant: ``y = m ⊙ (W + s·BA) x / ‖W + s·BA‖ + b``, the norm detached.

One :class:`DoraVariant` object exists per (layer, adapter); it owns no parameters (the
magnitude lives in the layer's ``lora_magnitude_vector`` ParameterDict, so LoRA saves,
places, trains and deletes it like its own factors) and only caches what is cheap to keep.

Why the forward is fast. The row norm ``‖W + s·BA‖`` needs no gradient, so it is computed
without building the ``(out, in)`` matrix ``W + s·BA``:

    ‖W_i + s·(BA)_i‖² = ‖W_i‖² + 2s·(B ⊙ W Aᵀ)_i·1 + s²·(B (A Aᵀ) ⊙ B)_i·1

``‖W_i‖²`` depends on the frozen base weight only and is cached until that weight changes
(merges bump its version counter); ``W Aᵀ`` is one ``(out, r)`` product, a single read of
``W``; the rest is ``r × r`` work. The whole norm is also cached until A, B, the scaling or
the base weight change, so repeated inference forwards (and recomputation under gradient
checkpointing) cost nothing. On top of that, the output is ``m/‖·‖ ⊙ (result + s·B A x)``
plus a bias correction: one fused ``addmm`` and one ``addcmul`` over the full-width output.

Zero-norm rows (Hugging Face PEFT issue 2049): a row with ``W_i + s·(BA)_i = 0`` has no
direction. PEFT divides by zero (NaN outputs and gradients); here the norm is replaced by 1
for such rows, so the row contributes ``m_i · 0 = 0`` — finite, and the gradients are too.
Merging such a row writes zeros and remembers the row so that unmerging restores it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft_core.errors import MergeError
from peft_core.layer import base_of
from peft_core.weights import CONV, EMBEDDING, dense_weight

MAGNITUDE = "lora_magnitude_vector"


def _safe(norm: torch.Tensor) -> torch.Tensor:
    """The norm with zeros replaced by 1 (a zero row stays zero instead of becoming NaN)."""
    return torch.where(norm == 0, torch.ones_like(norm), norm)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except Exception:  # pragma: no cover - tensor subclasses without a version counter
        return -1


class DoraVariant:
    """DoRA for one adapter of one LoRA layer (linear incl. Conv1D, embedding, or conv)."""

    adapter_layer_names = (MAGNITUDE,)

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._w2: torch.Tensor | None = None  # ‖W_i‖² of the base weight, fp32
        self._w2_key: tuple[Any, ...] | None = None
        self._norm: torch.Tensor | None = None  # ‖W + s·BA‖ rows, fp32, detached
        self._norm_key: tuple[Any, ...] | None = None
        self._merge_state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- the factors, in canonical 2-D form ---------------------------------------------

    def _factors(self, layer: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``A`` (r, in·k) and ``B`` (out, r) of the adapter, live tensors."""
        if self.kind == EMBEDDING:
            return layer.lora_embedding_A[name], layer.lora_embedding_B[name]
        A, B = layer.lora_A[name].weight, layer.lora_B[name].weight
        return A.flatten(1), B.flatten(1)

    def _magnitude_view(self, layer: Any) -> tuple[int, ...]:
        out = layer.description.out_features
        return (1, out) + (1,) * layer.description.conv_dim if self.kind == CONV else (out,)

    # -- creating ----------------------------------------------------------------------

    def init(self, layer: Any, adapter_name: str, config: Any) -> None:
        """Magnitude = the row norms of ``W + s·BA`` (exact, as PEFT initialises it)."""
        if MAGNITUDE not in layer._modules:
            layer.add_module(MAGNITUDE, nn.ParameterDict())
        with torch.no_grad():
            weight = dense_weight(layer.base_layer)
            delta = layer.get_delta_weight(adapter_name)
            norm = self._exact_norm(weight, delta)
        layer.lora_magnitude_vector[adapter_name] = nn.Parameter(norm.reshape(self._magnitude_view(layer)))

    @staticmethod
    def _exact_norm(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        full = weight.to(torch.promote_types(weight.dtype, delta.dtype)) + delta
        return torch.linalg.vector_norm(full.flatten(1).float(), dim=1).to(full.dtype)

    # -- the detached norm, fast --------------------------------------------------------

    def weight_norm(self, layer: Any, name: str) -> torch.Tensor:
        """``‖W + s·BA‖`` per output row (fp32, no graph), cached until an input changes."""
        base = base_of(layer.base_layer)
        param = getattr(base, "weight", None)
        A, B = self._factors(layer, name)
        scaling = layer.scaling[name]
        inference = torch.is_inference_mode_enabled()
        w_key = (param, _version(param), param.device, param.dtype) if isinstance(param, torch.Tensor) else None
        s_key = (scaling, _version(scaling)) if isinstance(scaling, torch.Tensor) else scaling
        key = (w_key, A, _version(A), B, _version(B), s_key, inference)
        if self._norm is not None and self._norm_key is not None and _same(key, self._norm_key):
            return self._norm
        with torch.no_grad():
            weight = dense_weight(layer.base_layer).flatten(1)
            if self._w2 is None or w_key is None or self._w2_key is None or not _same(w_key, self._w2_key) \
                    or self._w2.is_inference() != inference:
                self._w2 = weight.float().square().sum(1)
                self._w2_key = w_key
            s = float(scaling) if not isinstance(scaling, torch.Tensor) else scaling.float()
            Af, Bf = A.detach().float(), B.detach().float()
            wa = torch.mm(weight, A.detach().t().to(weight.dtype)).float()  # (out, r): one read of W
            cross = (wa * Bf).sum(1)
            quad = (torch.mm(Bf, torch.mm(Af, Af.t())) * Bf).sum(1)
            norm = (self._w2 + (2 * s) * cross + (s * s) * quad).clamp_min_(0).sqrt_()
        self._norm, self._norm_key = norm, key
        return norm

    # -- forward -------------------------------------------------------------------------

    def apply(self, layer: Any, adapter_name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        magnitude = layer.lora_magnitude_vector[adapter_name]
        norm = self.weight_norm(layer, adapter_name).to(magnitude.dtype)
        factor = magnitude / _safe(norm).reshape(magnitude.shape)  # gradient reaches m only
        scaling = layer.scaling[adapter_name]
        base = base_of(layer.base_layer)
        bias = getattr(base, "bias", None)
        if bias is not None and self.kind == CONV:
            bias = bias.view((1, -1) + (1,) * layer.description.conv_dim)
        if self.kind == EMBEDDING:
            return self._combine(result, self._embedding_lora(layer, adapter_name, x) * scaling, factor, None)
        dropout = layer.lora_dropout[adapter_name]
        A = layer.lora_A[adapter_name]
        if layer.training and not isinstance(dropout, nn.Identity):
            # dropout changes the input the direction sees, so the base part is recomputed on it (as PEFT)
            xd = dropout(x.to(A.weight.dtype))
            base_part = base(xd.to(result.dtype))
            if bias is not None:
                base_part = base_part - bias
            lora = (layer.lora_B[adapter_name](A(xd)) * scaling).to(result.dtype)
            f = factor.to(result.dtype)
            return result + (f - 1) * base_part + f * lora
        if self.kind != CONV and self._fusable(layer, adapter_name, result, factor, scaling):
            return self._linear_fused(layer, adapter_name, x, result, factor, scaling, bias)
        lora = layer.lora_B[adapter_name](A(x.to(A.weight.dtype))) * scaling
        return self._combine(result, lora, factor, bias)

    @staticmethod
    def _combine(result: torch.Tensor, lora: torch.Tensor, factor: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``factor ⊙ (result − b + lora) + b``: the direction's output rescaled, the bias kept."""
        f = factor.to(result.dtype)
        t = result + lora.to(result.dtype)
        if bias is None:
            return t * f
        return torch.addcmul(bias.to(result.dtype) * (1 - f), t, f)

    @staticmethod
    def _fusable(layer: Any, name: str, result: torch.Tensor, factor: torch.Tensor, scaling: Any) -> bool:
        factors = layer.hook_free_factors(name)  # a hook on a factor must see its call
        return (factors is not None and not isinstance(scaling, torch.Tensor) and result.dtype == factors[1].dtype
                and factor.dtype == result.dtype and result.is_contiguous() and result.dim() >= 1)

    @staticmethod
    def _linear_fused(layer: Any, name: str, x: torch.Tensor, result: torch.Tensor, factor: torch.Tensor,
                      scaling: float, bias: torch.Tensor | None) -> torch.Tensor:
        """``t = result + s·B(Ax)`` in one addmm, then ``t ⊙ f + b(1 − f)`` in one addcmul."""
        A, B = layer.lora_A[name].weight, layer.lora_B[name].weight
        hidden = F.linear(x.to(A.dtype), A)
        t = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]), B.t(),
                        alpha=scaling).view(result.shape)
        if bias is None:
            return t * factor
        return torch.addcmul(bias.to(t.dtype) * (1 - factor), t, factor)

    @staticmethod
    def _embedding_lora(layer: Any, name: str, x: torch.Tensor) -> torch.Tensor:
        base = base_of(layer.base_layer)
        A, B = layer.lora_embedding_A[name], layer.lora_embedding_B[name]
        after_a = F.embedding(x, A.T, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq,
                              base.sparse)
        return after_a @ B.T

    # -- merging -------------------------------------------------------------------------

    def _row_view(self, weight: torch.Tensor) -> tuple[int, ...]:
        return (weight.shape[0],) + (1,) * (weight.dim() - 1)

    def merged_weight(self, layer: Any, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        """``m/‖W₀ + ΔW‖ ⊙ (weight + ΔW)``, the norm taken on the base weight without other merged adapters.

        ``weight`` already holds adapters merged before this one; the forward normalises
        with the plain base weight, so the merge must too for merged outputs to match.
        """
        with torch.no_grad():
            delta = layer.get_delta_weight(adapter_name)
            original = weight
            for previous in reversed(layer.merged_adapters):
                if previous != adapter_name:
                    original = layer.unmerged_weight(original, previous)
            norm = self._exact_norm(original, delta).float()
            factor = layer.lora_magnitude_vector[adapter_name].detach().flatten().float() / _safe(norm)
            lost = factor == 0
            self._merge_state = (factor, lost, weight[lost].clone())
            merged = factor.view(self._row_view(weight)) * (weight.float() + delta.float())
        return merged.to(weight.dtype)

    def unmerged_weight(self, layer: Any, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        if self._merge_state is None:
            raise MergeError(f"DoRA adapter {adapter_name!r} was never merged into this layer; there is nothing to unmerge.")
        factor, lost, rows = self._merge_state
        with torch.no_grad():
            delta = layer.get_delta_weight(adapter_name).float()
            safe = torch.where(lost, torch.ones_like(factor), factor)
            out = weight.float() / safe.view(self._row_view(weight)) - delta
            out[lost] = rows.float()  # rows merged to zero are restored as they were
        return out.to(weight.dtype)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Key equality where tensors compare by identity (never elementwise)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, tuple) and isinstance(y, tuple):
            if not _same(x, y):
                return False
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if x is not y:
                return False
        elif x != y:
            return False
    return True
