"""``get_layer_status`` / ``get_model_status``: what every adapter layer is doing, in PEFT's dataclasses.

Why: multi-adapter bookkeeping can drift (a layer left disabled, an adapter merged in some
layers only, gradients on where they should be off); these reports make such states
visible at a glance, with ``"irregular"`` wherever layers disagree. The field names and
meanings are Hugging Face PEFT's, so code written against ``peft.peft_model.TunerLayerStatus``
reads ours unchanged.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from .errors import PeftCoreError
from .layer import AdapterLayer
from .wrappers import ModulesToSaveWrapper

Irregular = Literal["irregular"]


@dataclass
class TunerLayerStatus:
    """One adapter layer (or ``modules_to_save`` wrapper)."""

    name: str
    module_type: str
    enabled: bool
    active_adapters: list[str]
    merged_adapters: list[str]
    requires_grad: dict[str, bool | Irregular]
    available_adapters: list[str]
    devices: dict[str, list[str]]
    quantization_backend: str | None


@dataclass
class TunerModelStatus:
    """The whole model: per-layer facts folded together, ``"irregular"`` where layers disagree."""

    base_model_type: str
    adapter_model_type: str
    peft_types: dict[str, str]
    trainable_params: int
    total_params: int
    num_adapter_layers: int
    enabled: bool | Irregular
    active_adapters: list[str] | Irregular
    merged_adapters: list[str] | Irregular
    requires_grad: dict[str, bool | Irregular]
    available_adapters: list[str]
    devices: dict[str, list[str]]
    quantization_backend: str | None | Irregular


def _fold(values: list[Any]) -> Any:
    """True/False when all agree, ``"irregular"`` otherwise (PEFT's rule)."""
    if all(v is True for v in values):
        return True
    if all(v is False for v in values):
        return False
    return "irregular"


def _adapter_tensors(module: nn.Module) -> dict[str, list[Any]]:
    if isinstance(module, ModulesToSaveWrapper):
        return {name: list(copy.parameters()) for name, copy in module.modules_to_save.items()}
    return {name: list(module.adapter_parameters(name)) for name in module.adapter_names}


def _module_type(module: nn.Module) -> str:
    method = getattr(module, "method", "")
    prefix = f"{method.lower()}." if method else ""
    return prefix + type(module).__name__


def _quantization_backend(module: nn.Module) -> str | None:
    backend = getattr(module, "quantization_backend", None)
    if backend is not None:
        return getattr(backend, "backend_name", str(backend))
    description = getattr(module, "description", None)
    if description is not None and getattr(description, "quantized", False):
        return description.extra.get("quantization_backend", "quantized")
    return None


def get_layer_status(model: nn.Module) -> list[TunerLayerStatus]:
    """The status of every adapter layer of a ``PeftModel``, tuner, or model with injected adapters."""
    from .serialization import tuner_of

    try:
        tuner = tuner_of(model)
    except PeftCoreError:
        tuner = None
    modules = tuner.adapter_modules() if tuner is not None else [
        (n, m) for n, m in model.named_modules() if isinstance(m, (AdapterLayer, ModulesToSaveWrapper))
    ]
    # names as PEFT gives them: relative to the tuner ("model.<path>") for wrapped models,
    # to the model itself for models with injected adapters
    prefix = "model." if tuner is not None and tuner.model is not model else ""
    statuses = []
    for name, module in modules:
        tensors = _adapter_tensors(module)
        if isinstance(module, ModulesToSaveWrapper):
            active = [module.active_adapter] if module.active_adapter is not None else []
            merged: list[str] = []
        else:
            active, merged = module.active_adapters, list(module.merged_adapters)
        statuses.append(
            TunerLayerStatus(
                name=prefix + name,
                module_type=_module_type(module),
                enabled=not module._disable_adapters,
                active_adapters=active,
                merged_adapters=merged,
                requires_grad={a: _fold([t.requires_grad for t in ts]) for a, ts in tensors.items() if ts},
                available_adapters=sorted(tensors),
                devices={a: sorted({t.device.type for t in ts}) for a, ts in tensors.items()},
                quantization_backend=_quantization_backend(module),
            )
        )
    if not statuses:
        raise PeftCoreError(
            "no adapter layers found in the model; get_layer_status needs a PeftModel or a model with injected adapters."
        )
    return statuses


def get_model_status(model: nn.Module) -> TunerModelStatus:
    """One summary of the adapter state of the whole model (see :class:`TunerModelStatus`)."""
    from .model import PeftModel
    from .serialization import tuner_of

    layers = get_layer_status(model)
    try:
        tuner = tuner_of(model)
    except PeftCoreError:
        tuner = None
    if isinstance(model, PeftModel):
        base_type = type(model.get_base_model()).__name__
        adapter_type = type(model.base_model).__name__
        peft_types = {k: str(c.peft_type) for k, c in model.peft_config.items()}
        trainable, total = model.get_nb_trainable_parameters()
    else:
        peft_types = {k: str(c.peft_type) for k, c in tuner.peft_config.items()} if tuner is not None else {}
        is_hf = type(model).__module__.startswith("transformers.")
        base_type, adapter_type = (type(model).__name__ if is_hf else "other"), "None"
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    enabled_set = {s.enabled for s in layers}
    active: list[str] | Irregular
    if tuner is not None:
        # a layer lists only the active adapters it holds; it is regular when that is exactly them
        active = tuner.active_adapters
        for s in layers:
            if s.active_adapters != [a for a in active if a in s.available_adapters]:
                active = "irregular"
                break
    else:
        votes = {tuple(s.active_adapters) for s in layers}
        active = list(votes.pop()) if len(votes) == 1 else ([] if not votes else "irregular")
    merged_all = sorted({a for s in layers for a in s.merged_adapters})
    merged: list[str] | Irregular = merged_all
    for s in layers:
        if set(merged_all) & (set(s.available_adapters) - set(s.merged_adapters)):
            merged = "irregular"
            break
    grads: dict[str, list[Any]] = collections.defaultdict(list)
    devices: dict[str, set[str]] = collections.defaultdict(set)
    for s in layers:
        for a, v in s.requires_grad.items():
            grads[a].append(v)
        for a, d in s.devices.items():
            devices[a].update(d)
    backends = {s.quantization_backend for s in layers}
    return TunerModelStatus(
        base_model_type=base_type,
        adapter_model_type=adapter_type,
        peft_types=peft_types,
        trainable_params=trainable,
        total_params=total,
        num_adapter_layers=len(layers),
        enabled=enabled_set.pop() if len(enabled_set) == 1 else "irregular",
        active_adapters=active,
        merged_adapters=merged,
        requires_grad={a: _fold(v) for a, v in grads.items()},
        available_adapters=sorted({a for s in layers for a in s.available_adapters}),
        devices={a: sorted(d) for a, d in devices.items()},
        quantization_backend=backends.pop() if len(backends) == 1 else "irregular",
    )
