"""Turning a bitsandbytes-quantized model back into plain ``nn.Linear`` layers.

Why this exists: ``merge_and_unload`` on a quantized base requantizes the merged weight,
which rounds the adapter's contribution to the 4-bit/8-bit grid. Dequantizing *first*
and merging in full precision keeps the adapter exact::

    merged = dequantize_model(peft_model).merge_and_unload()   # plain nn.Linear model

It works on a plain model, a ``PeftModel`` or a model with injected adapters: base layers
inside adapter layers are replaced too, and the adapter layers' descriptions updated, so
merging afterwards takes the plain-weight path.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch
from torch import nn

from peft_core.layer import AdapterLayer

from .quant import bnb_kind, dequantize

M = TypeVar("M", bound=nn.Module)


def is_quantized_model(model: nn.Module) -> bool:
    """Does ``model`` hold any bitsandbytes linear layer?"""
    return any(bnb_kind(m) is not None for m in model.modules())


def _default_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the rest of the model computes in: dequantized layers must match it."""
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get):
            try:
                emb = get()
            except (AttributeError, NotImplementedError):
                emb = None
            weight = getattr(emb, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dtype.is_floating_point:
                return weight.dtype
            break
    adapter_params = {id(p) for m in model.modules() if isinstance(m, AdapterLayer)
                      for n in m.adapter_names for p in m.adapter_parameters(n)}
    for param in model.parameters():
        if param.dtype.is_floating_point and id(param) not in adapter_params and type(param) in (torch.Tensor, nn.Parameter):
            return param.dtype
    return torch.float32


def to_linear(module: nn.Module, dtype: torch.dtype) -> nn.Linear:
    """A plain ``nn.Linear`` with the dequantized weight (and the bias) of a bitsandbytes linear."""
    weight = dequantize(module).to(dtype)
    linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                       device=weight.device, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if module.bias is not None:
            linear.bias.copy_(module.bias.to(dtype))
    linear.weight.requires_grad_(False)
    if module.bias is not None:
        linear.bias.requires_grad_(module.bias.requires_grad)
    linear.train(module.training)
    return linear


def dequantize_model(model: M, dtype: torch.dtype | None = None) -> M:
    """Replace every bitsandbytes linear in ``model`` (in place) with a dequantized ``nn.Linear``.

    ``dtype`` defaults to the dtype of the model's input embeddings (else of its first
    plain floating parameter), so the new layers fit the rest of the model. Merged
    adapters stay merged (their delta is part of the dequantized weight). When nothing
    quantized is left, the transformers model's quantization config is removed, so
    ``save_pretrained`` writes a plain checkpoint. Returns ``model``.
    """
    dtype = dtype or _default_dtype(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if bnb_kind(child) is None:
                continue
            linear = to_linear(child, dtype)
            setattr(parent, name, linear)
            if isinstance(parent, AdapterLayer) and name == "base_layer":
                parent.description = dataclasses.replace(parent.description, quantized=False, dtype=dtype, extra={})
    if not is_quantized_model(model):
        for module in model.modules():
            _forget_quantization(module)
    return model


def _forget_quantization(module: nn.Module) -> None:
    """Drop transformers' record that ``module`` was loaded quantized."""
    # only the model that owns it: wrappers (PeftModel) forward attribute lookups to it
    quantizer = module.__dict__.get("hf_quantizer")
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(module)
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):
        if flag in module.__dict__:
            module.__dict__[flag] = False
