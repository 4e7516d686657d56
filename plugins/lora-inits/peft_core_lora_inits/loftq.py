"""LoftQ: a quantized base ``Q`` and LoRA factors chosen together so that ``Q + B·A ≈ W``.

The loop alternates: quantize what the factors do not explain, then take the best rank-``r``
approximation (SVD) of what the quantization lost. After ``loftq_iter`` rounds the base weight
becomes ``dequant(Q)`` — the values a 4-bit (NF4) or 8-bit bitsandbytes model will hold once the
saved base is loaded quantized — and the factors absorb the quantization error. Everything runs
on the CPU with bitsandbytes' own quantizers (NF4 with block size 64 and no double quantization,
int8 row-wise), the ones PEFT 0.21 uses, so the numbers equal PEFT's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from peft_core.errors import ConfigError, PluginNotInstalledError
from peft_core.weights import dense_weight, write_dense_weight

from .inits import has_quantized_base

NF4_BLOCKSIZE = 64


@dataclass
class LoftQConfig:
    """Settings of LoftQ (``LoraConfig(init_lora_weights="loftq", loftq_config=LoftQConfig(...))``).

    ``loftq_bits`` is 4 (NF4) or 8 (int8); ``loftq_iter`` the number of alternating rounds (≥ 1).
    Stored in ``adapter_config.json`` as the plain dict PEFT writes.
    """

    loftq_bits: int = 4
    loftq_iter: int = 1

    def __post_init__(self) -> None:
        problems = loftq_problems({"loftq_bits": self.loftq_bits, "loftq_iter": self.loftq_iter})
        if problems:
            raise ConfigError("; ".join(problems))


def loftq_settings(loftq_config: Any) -> dict[str, int]:
    """``loftq_config`` as a dict, whether given as :class:`LoftQConfig`, PEFT's class or a dict."""
    if isinstance(loftq_config, dict):
        return dict(loftq_config)
    return {"loftq_bits": getattr(loftq_config, "loftq_bits", None), "loftq_iter": getattr(loftq_config, "loftq_iter", None)}


def loftq_problems(settings: dict[str, Any]) -> list[str]:
    problems = []
    bits, iters = settings.get("loftq_bits"), settings.get("loftq_iter")
    if bits not in (4, 8) or isinstance(bits, bool):
        problems.append(f"loftq_bits must be 4 (NF4) or 8 (int8), got {bits!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        problems.append(f"loftq_iter must be a positive integer, got {iters!r}")
    return problems


def _bitsandbytes() -> Any:
    try:
        import bitsandbytes.functional as bnb_functional
    except ImportError as exc:
        raise PluginNotInstalledError(
            "LoftQ quantizes with bitsandbytes, which is not installed: pip install 'peft-core-lora-inits[loftq]'"
        ) from exc
    return bnb_functional


def quantize_roundtrip(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``dequant(quant(weight))`` on the CPU: what a bitsandbytes 4-bit (NF4) or 8-bit layer would hold."""
    bnb = _bitsandbytes()
    weight = weight.to(device="cpu", dtype=torch.float32).contiguous()
    if bits == 4:
        packed, state = bnb.quantize_4bit(weight, blocksize=NF4_BLOCKSIZE, compress_statistics=False, quant_type="nf4")
        return bnb.dequantize_4bit(packed, state).to(torch.float32)
    rows, row_scales, _ = bnb.int8_vectorwise_quant(weight.to(torch.float16))
    return bnb.int8_vectorwise_dequant(rows, row_scales).to(torch.float32)


def _principal_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``B·A`` the best rank-``rank`` approximation, √S split evenly between them."""
    U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    root = torch.sqrt(torch.diag(S))
    return root[:rank, :] @ Vh, U @ root[:, :rank]


@torch.no_grad()
def loftq_decompose(weight: torch.Tensor, bits: int, rank: int, iters: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dequantized base, A, B)`` after ``iters`` LoftQ rounds on a float ``(out, in)`` weight."""
    weight = weight.to(torch.float32)
    target = weight
    for step in range(iters):
        dequantized = quantize_roundtrip(target, bits)
        lora_A, lora_B = _principal_factors(weight - dequantized, rank)
        if step + 1 < iters:
            target = weight - lora_B @ lora_A
    return dequantized, lora_A, lora_B


@torch.no_grad()
def loftq_init(layer, adapter_name: str, config: Any) -> None:
    """Fill one adapter by LoftQ and replace the (float) base weight by its quantized values.

    As in PEFT, the LoRA scaling is not folded in: ``Q + B·A ≈ W`` holds for ``lora_alpha == r``.
    """
    settings = loftq_settings(config.loftq_config)
    problems = loftq_problems(settings)
    if problems:
        raise ConfigError("init_lora_weights='loftq': " + "; ".join(problems))
    if has_quantized_base(layer):
        raise ConfigError("init_lora_weights='loftq' quantizes a float base itself; this base is already quantized. "
                          "Initialise on the float model, or use replace_lora_weights_loftq on the quantized one.")
    dense = dense_weight(layer)
    base, lora_A, lora_B = loftq_decompose(dense, settings["loftq_bits"], layer.r[adapter_name], settings["loftq_iter"])
    A, B = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
    A.data, B.data = lora_A.contiguous(), lora_B.contiguous()
    write_dense_weight(layer, base.to(dense.dtype))


@torch.no_grad()
def replace_lora_weights_loftq(
    peft_model: Any,
    model_path: str | Path | None = None,
    adapter_name: str = "default",
    callback: Callable[[Any, str], bool] | None = None,
) -> None:
    """Re-initialise the LoRA factors of a model whose base is *already* 4-bit, from the float weights on disk.

    For each LoRA layer over a bitsandbytes ``Linear4bit``, the float weight is read lazily from
    ``model_path`` (a ``model.safetensors`` file or a directory holding one) and one LoftQ step
    fits the factors to ``weight - dequant(quantized base)``; the quantized base is not changed.
    ``callback(model, module_name)`` returning ``False`` rolls that layer back (keep a layer only
    if it lowers your error measure). PEFT's ``replace_lora_weights_loftq``, with the same arguments.
    """
    from safetensors import safe_open

    from peft_core.serialization import tuner_of

    if model_path is None:
        raise ConfigError("replace_lora_weights_loftq needs model_path: the float model.safetensors (or its directory).")
    path = Path(model_path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"replace_lora_weights_loftq: no safetensors file at {str(path)!r}.")
    prefix = getattr(peft_model.get_base_model(), "base_model_prefix", "") or ""
    found = False
    with safe_open(str(path), framework="pt", device="cpu") as stored:
        names = set(stored.keys())
        for name, layer in tuner_of(peft_model).adapter_layers():
            if type(layer.base_layer).__name__ != "Linear4bit" or adapter_name not in getattr(layer, "lora_A", {}):
                continue
            found = True
            key = f"{name}.weight"
            if key not in names and prefix and key.startswith(prefix + "."):
                key = key[len(prefix) + 1:]
            weight = stored.get_tensor(key).to(torch.float32)
            lora_A, lora_B = _principal_factors(weight - dense_weight(layer).to(torch.float32), layer.r[adapter_name])
            A, B = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            before = (A.data, B.data)
            A.data, B.data = lora_A.to(A.dtype).contiguous(), lora_B.to(B.dtype).contiguous()
            if callback is not None and not callback(peft_model, name):
                A.data, B.data = before
    if not found:
        raise ConfigError("replace_lora_weights_loftq: the model has no LoRA layer over a bitsandbytes Linear4bit.")
