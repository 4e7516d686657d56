"""What the bitsandbytes backend adds to the conformance suite: quantized tiny models and its rounding.

Every method that declares ``quantized_base`` and has configs for ``tiny_llama`` is tested on
the same tiny Llama with its linears quantized by bitsandbytes on the CPU, 4-bit NF4 and 8-bit,
built from a config (saved to a temporary directory and loaded with a ``BitsAndBytesConfig``,
the way users load quantized checkpoints). The merge checks there compare written weights
with the backend's documented rounding (:func:`peft_core_bnb.quant.rounding_bound`).
"""

from __future__ import annotations

import functools
import tempfile
import warnings

import torch
from torch import nn

from peft_core import Capability, hookimpl

from .quant import bnb_kind, rounding_bound


@functools.lru_cache(maxsize=1)
def _float_checkpoint() -> str:
    from peft_core.conformance.models import tiny_llama

    path = tempfile.mkdtemp(prefix="peft-core-tiny-llama-")
    tiny_llama().save_pretrained(path)
    return path


def quantized_tiny_llama(bits: int) -> nn.Module:
    """The suite's tiny Llama, loaded from its float checkpoint with bitsandbytes ``bits``-bit linears."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if bits == 4:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(_float_checkpoint(), quantization_config=config)
    return model.eval()


@hookimpl
def peft_core_conformance_model_kinds() -> list:
    from peft_core.conformance.strategies import MODEL_KINDS, ModelKind

    tokens = MODEL_KINDS["tiny_llama"].make_inputs
    return [
        ModelKind(f"tiny_llama_{name}", functools.partial(quantized_tiny_llama, bits), tokens,
                  derived_from="tiny_llama", requires=Capability.QUANTIZED_BASE, lossy_merge=True, train_lr=lr,
                  castable=False)
        for name, bits, lr in (("nf4", 4, 1e-3), ("int8", 8, 5e-2))  # 8-bit matmuls quantize activations
    ]


@hookimpl
def peft_core_weight_rounding(module: nn.Module, weight: torch.Tensor) -> torch.Tensor | None:
    if bnb_kind(module) is None:
        return None
    return rounding_bound(module, weight)
