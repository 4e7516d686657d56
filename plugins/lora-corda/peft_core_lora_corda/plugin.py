"""The CorDA plugin (entry point ``peft_core: lora_corda``): serves ``init_lora_weights="corda"`` and ``corda_config``.

It adds no method. :func:`preprocess_corda` (exported as ``peft_core.preprocess_corda``,
with ``CordaConfig``) prepares the model; then ``get_peft_model`` with
``init_lora_weights="corda"`` calls :func:`peft_core_lora_init` for each layer, which builds
``A``/``B`` from the prepared decomposition and writes the residual base weight.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from peft_core import hookimpl
from peft_core.errors import ConfigError
from peft_core.layer import base_of
from peft_core.weights import LINEAR, dense_weight, write_dense_weight

from .config import CordaConfig
from .corda import corda_settings, preprocess_corda

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@hookimpl
def peft_core_register_methods(registry: Any) -> None:
    registry.add_exports({"CordaConfig": CordaConfig, "preprocess_corda": preprocess_corda})


@hookimpl
def peft_core_lora_extensions() -> dict[str, Any]:
    return {"inits": ["corda"], "fields": ["corda_config"]}


@hookimpl
def peft_core_lora_init(layer: Any, adapter_name: str, config: Any, init: Any) -> bool | None:
    if init != "corda":
        return None
    if layer.description.kind != LINEAR:
        raise ConfigError(f"init_lora_weights='corda' initialises linear layers only (as in PEFT); this layer is a "
                          f"{layer.description.kind}. Narrow target_modules to linear layers.")
    if layer.description.quantized:
        raise ConfigError("init_lora_weights='corda' needs an unquantized base (as in PEFT): build the CorDA adapter "
                          "on the float model, then quantize the residual model.")
    base = base_of(layer.base_layer)
    eigens = getattr(base, "eigens", None)
    if eigens is None:
        raise ConfigError("init_lora_weights='corda' needs preprocess_corda(model, lora_config, run_model=...) to run "
                          "on the model before get_peft_model; this layer has no CorDA decomposition.")
    weight = dense_weight(base)
    if weight.dtype not in FLOAT_DTYPES:
        raise ConfigError(f"CorDA needs a float32/float16/bfloat16 base weight, got {weight.dtype}; initialise "
                          "before quantizing, then quantize the residual model.")
    r, scaling = layer.r[adapter_name], layer.scaling[adapter_name]
    out_features, in_features = weight.shape
    expected = {"S_WC": (r,), "U_WC": (out_features, r), "V_WC": (in_features, r)}
    for field, shape in expected.items():
        tensor = getattr(eigens, field)
        if tuple(tensor.shape) != shape:
            raise ConfigError(f"CorDA {field} has shape {tuple(tensor.shape)}, expected {shape}: preprocess_corda (or "
                              "its cache_file) was run with another model, rank or target_modules than this adapter.")
        if not torch.isfinite(tensor).all():
            raise ConfigError(f"CorDA {field} holds NaN/inf; rerun preprocess_corda with more calibration samples.")
    # split sqrt(S / scaling) between the factors so that scaling · B·A is the kept part of W
    root = (eigens.S_WC / scaling).sqrt()
    a = (eigens.V_WC.T * root.unsqueeze(1)).contiguous()
    b = (eigens.U_WC * root).contiguous()
    with torch.no_grad():
        layer.lora_A[adapter_name].weight.data = a.to(weight.device)
        layer.lora_B[adapter_name].weight.data = b.to(weight.device)
        residual = weight.float() - scaling * (b @ a).to(weight.device)
        write_dense_weight(base, residual.to(weight.dtype))
    del base.eigens  # used up: a second adapter needs a fresh preprocess_corda
    return True


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    if getattr(config, "peft_type", None) != "LORA":
        return None
    if config.init_lora_weights != "corda":
        if config.corda_config is not None:
            warnings.warn("corda_config is ignored: init_lora_weights is not 'corda'.", UserWarning, stacklevel=2)
        return None
    problems = []
    try:
        if config.corda_config is None:
            warnings.warn("init_lora_weights='corda' without corda_config; using CordaConfig() defaults.",
                          UserWarning, stacklevel=2)
        corda_settings(config)
    except ConfigError as exc:
        problems.append(str(exc))
    if config.lora_bias:
        problems.append("lora_bias=True works with init_lora_weights=True or False only (as in PEFT), not 'corda'")
    return problems
