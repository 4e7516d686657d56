"""Reading and writing bitsandbytes weights as dense tensors.

These are the only places that know how bitsandbytes stores a weight. Every method
plugin reaches them through the core's weight hooks, which is why no method needs a
bitsandbytes-specific layer file.

bitsandbytes is looked up in ``sys.modules`` instead of imported: a model can only hold
bitsandbytes layers if bitsandbytes was imported already, so a process that never uses
quantization never pays for importing it (several seconds) just because this plugin is
installed.
"""

from __future__ import annotations

import copy
import sys
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

FOUR_BIT: Literal["4bit"] = "4bit"
EIGHT_BIT: Literal["8bit"] = "8bit"


def bnb() -> ModuleType | None:
    """bitsandbytes if this process imported it, else ``None`` (then no layer can be ours)."""
    return sys.modules.get("bitsandbytes")


def bnb_kind(module: nn.Module) -> Literal["4bit", "8bit"] | None:
    """``"4bit"`` for ``Linear4bit``, ``"8bit"`` for ``Linear8bitLt``, else ``None``."""
    lib = bnb()
    if lib is None:
        return None
    if isinstance(module, lib.nn.Linear4bit):
        return FOUR_BIT
    if isinstance(module, lib.nn.Linear8bitLt):
        return EIGHT_BIT
    return None


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a bitsandbytes linear computes in, which is what adapters should match.

    4-bit layers carry it (``compute_dtype``, set from ``bnb_4bit_compute_dtype``); before
    that is known, the dtype the weight had when it was quantized is the best guess.
    8-bit layers compute in their input's dtype, which the layer cannot know: the bias
    dtype is used when there is a bias, float32 otherwise (adapters over a quantized base
    are float32 in Hugging Face PEFT anyway).
    """
    if bnb_kind(module) == FOUR_BIT:
        dtype = getattr(module, "compute_dtype", None)
        if dtype is None:
            state = module.weight.quant_state
            dtype = getattr(state, "original_dtype", None) or state.dtype
        return dtype
    bias = getattr(module, "bias", None)
    return bias.dtype if isinstance(bias, torch.Tensor) and bias.dtype.is_floating_point else torch.float32


def _standard_4bit(weight: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The 4-bit codes and quant state of ``weight`` in bitsandbytes' standard layout, without changing it.

    On CPUs with AVX512-BF16, an inference forward repacks the weight in place for a
    faster kernel (``quant_state.packing_format_for_cpu``): codes reordered, absmax
    transposed to ``(in/blocksize, out)`` bfloat16, double quantization undone.
    ``dequantize_4bit`` cannot read that layout, and bitsandbytes' own inverse leaves the
    absmax transposed when there was no double quantization, so it is undone here: the
    codes with bitsandbytes' inverse (on a copy of the state), the absmax by hand. The
    result is the weight the packed kernel computes with (absmax rounded to bfloat16).
    """
    state = weight.quant_state
    if not getattr(state, "packing_format_for_cpu", False):
        return weight.data, state
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    packed_absmax = state.absmax
    codes, _ = _convert_weight_packed_for_cpu_inverse(weight.data, copy.copy(state))
    standard = copy.copy(state)
    standard.absmax = packed_absmax.T.reshape(-1).to(torch.float32)
    standard.nested, standard.state2 = False, None
    standard.dtype = getattr(state, "original_dtype", state.dtype)
    standard.packing_format_for_cpu = False
    return codes, standard


def _int8_stats(module: nn.Module) -> torch.Tensor:
    # the row scales live on the weight until the first forward moves them to the layer state
    scb = getattr(module.weight, "SCB", None)
    return scb if scb is not None else module.state.SCB


def dequantize(module: nn.Module) -> torch.Tensor:
    """The dense ``(out, in)`` weight of a bitsandbytes linear.

    4-bit: in the dtype the weight had when it was quantized (``quant_state.dtype``);
    8-bit: float32, as ``int8_vectorwise_dequant`` gives it.
    """
    lib = bnb()
    kind = bnb_kind(module)
    assert lib is not None and kind is not None
    weight = module.weight
    if kind == FOUR_BIT:
        codes, state = _standard_4bit(weight)
        return lib.functional.dequantize_4bit(codes, state).reshape(
            module.out_features, module.in_features
        )
    if module.state.has_fp16_weights:  # 8-bit training mode: the weight is not quantized yet
        return weight.data.detach().clone()
    return lib.functional.int8_vectorwise_dequant(weight.data, _int8_stats(module))


def requantize(module: nn.Module, dense: torch.Tensor) -> None:
    """Quantize ``dense`` (``(out, in)``) into ``module`` in place, keeping its quantization settings.

    The ``Parameter`` object is kept (only its data and statistics change), so optimizers,
    hooks and tied references still see the layer's weight. 4-bit keeps the quant type,
    block size, double quantization (``compress_statistics``), storage dtype and the
    original weight dtype; 8-bit keeps the outlier threshold and the fp16-weights mode.
    """
    lib = bnb()
    kind = bnb_kind(module)
    assert lib is not None and kind is not None
    weight = module.weight
    device = weight.device
    with torch.no_grad():
        if kind == FOUR_BIT:
            state = weight.quant_state
            dtype = getattr(state, "original_dtype", None) if getattr(state, "packing_format_for_cpu", False) else None
            dense = dense.to(device=device, dtype=dtype or state.dtype).contiguous()
            packed, new_state = lib.functional.quantize_4bit(
                dense,
                blocksize=weight.blocksize,
                compress_statistics=weight.compress_statistics,
                quant_type=weight.quant_type,
                quant_storage=weight.quant_storage,
            )
            # a fresh state in the standard layout; the next CPU inference forward repacks it
            weight.data = packed
            weight.quant_state = new_state
            module.quant_state = new_state
            return
        if module.state.has_fp16_weights:
            weight.data.copy_(dense.to(weight.dtype))
            return
        # bitsandbytes quantizes 8-bit weights from float16 (Int8Params._quantize); so do we
        cb, scb, _ = lib.functional.int8_vectorwise_quant(dense.to(device=device, dtype=torch.float16).contiguous())
        weight.data = cb
        weight.CB, weight.SCB = cb, scb
        # the layer state caches the old CB/SCB after a forward; clearing it makes the next
        # forward take the new ones from the weight (Linear8bitLt.init_8bit_state)
        module.state.reset_grads()


def settings(module: nn.Module) -> dict[str, object]:
    """The quantization settings of a bitsandbytes linear, for descriptions and messages."""
    kind = bnb_kind(module)
    if kind == FOUR_BIT:
        w = module.weight
        return {"quantization_backend": "bitsandbytes", "bits": 4, "quant_type": w.quant_type, "blocksize": w.blocksize,
                "double_quant": bool(w.compress_statistics), "quant_storage": w.quant_storage}
    if kind == EIGHT_BIT:
        return {"quantization_backend": "bitsandbytes", "bits": 8, "threshold": float(module.state.threshold),
                "has_fp16_weights": bool(module.state.has_fp16_weights)}
    return {}


def rounding_bound(module: nn.Module, dense: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on ``|dense_weight(module) - dense|`` right after ``requantize(module, dense)``.

    This is the documented rounding of writing a dense weight (a merge) into a quantized
    layer, computed from the scales the layer now holds:

    * 4-bit: each block of ``blocksize`` values is scaled by its absmax ``a`` and rounded to
      the nearest of the 16 code values, so the error is at most ``a · g / 2`` with ``g`` the
      widest gap between neighbouring codes (NF4: 0.2771, near ±1; FP4: 0.3333). With double
      quantization the stored scale ``a′`` differs from ``a`` (it is itself 8-bit), which
      adds ``|a − a′|``.
    * 8-bit: each row is scaled by its absmax ``s`` to integers in [−127, 127], so the
      error is at most ``s / 254``, plus the float16 rounding bitsandbytes applies before
      quantizing (``|w| · 2⁻¹¹``).

    It is the tolerance a merge check on a quantized base should use.
    """
    lib = bnb()
    kind = bnb_kind(module)
    if lib is None or kind is None:
        return torch.zeros_like(dense)
    dense = dense.detach().float()
    if kind == EIGHT_BIT:
        if module.state.has_fp16_weights:
            return dense.abs() * 2.0**-10
        scale = _int8_stats(module).float().to(dense.device).reshape(-1, 1)
        return scale / 254 + dense.abs() * 2.0**-11 + 1e-7
    _, state = _standard_4bit(module.weight)
    absmax = state.absmax
    if state.nested:
        absmax = lib.functional.dequantize_blockwise(state.absmax, state.state2) + state.offset
    stored = absmax.float().to(dense.device)
    levels = state.code.float().sort().values
    gap = (levels[1:] - levels[:-1]).max()
    flat = dense.reshape(-1)
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % state.blocksize))
    true = padded.reshape(-1, state.blocksize).abs().amax(dim=1)
    per_block = true * gap / 2 + (true - stored[: true.numel()]).abs()
    bound = per_block.repeat_interleave(state.blocksize)[: flat.numel()]
    return (bound * (1 + 1e-3) + 1e-6).reshape(dense.shape)
