"""Loading an EVA state dict into a ``PeftModel``: new ranks, new ``lora_A``, updated config."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch import nn

from peft_core.errors import ConfigError
from peft_core.layer import AdapterLayer
from peft_core.targeting import pattern_value

from .eva import MIN_TARGETS_TO_SHORTEN, _is_eva_layer, _strip, eva_settings


def shortest_distinguishing_suffixes(targets: list[str], others: list[str]) -> list[str]:
    """Dotted suffixes that select every name in ``targets`` and no name in ``others``.

    Keeps a saved ``target_modules`` short ("q_proj" instead of one entry per layer) when
    EVA removed some layers and the list must be spelled out.
    """
    def suffixes(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[i:]) for i in range(len(parts) - 1, -1, -1)]  # shortest first

    taken = {s for name in others for s in suffixes(name)}
    chosen: list[str] = []
    for name in sorted(targets, key=suffixes):
        if any(name == c or name.endswith("." + c) for c in chosen):
            continue
        for suffix in suffixes(name):
            if suffix not in taken:
                chosen.append(suffix)
                break
    return chosen or list(targets)


def _rebuild(layer: AdapterLayer, adapter_name: str, config: Any, module_name: str, r: int, alpha: float,
             init: Any) -> None:
    """Recreate one adapter of ``layer`` at rank ``r`` (where and how trainable the old one was)."""
    old = layer.adapter_parameters(adapter_name)
    device, dtype = old[0].device, old[0].dtype
    trainable = old[0].requires_grad
    changed = dataclasses.replace(config, r=r, lora_alpha=alpha, rank_pattern={}, alpha_pattern={},
                                  init_lora_weights=init)
    layer.update_layer(adapter_name, changed, module_name=module_name)
    for attr in layer.adapter_layer_names:
        container = getattr(layer, attr)
        if adapter_name in container and isinstance(container[adapter_name], nn.Module):
            container[adapter_name].to(device=device, dtype=dtype)
    for param in layer.adapter_parameters(adapter_name):
        param.requires_grad_(trainable)


def _drop(model: nn.Module, name: str, layer: AdapterLayer, adapter_name: str) -> None:
    """Remove the adapter from a layer EVA gave rank 0 (the plain module comes back if it was the only one)."""
    if len(layer.adapter_names) > 1:
        layer.delete_adapter(adapter_name)
        return
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, layer.base_layer)


@torch.no_grad()
def load_eva_state_dict(model: nn.Module, eva_state_dict: dict[str, torch.Tensor], adapter_name: str) -> None:
    config = model.peft_config[adapter_name]
    eva = eva_settings(config)
    kept: list[str] = []
    fallback: list[str] = []
    others: list[str] = []
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    for name, module in list(model.named_modules()):
        short = _strip(name)
        if not (isinstance(module, AdapterLayer) and module.method == "LORA" and module.has_adapter(adapter_name)):
            others.append(short)
            continue
        r = pattern_value(config.rank_pattern or {}, short, config.r)
        alpha = pattern_value(config.alpha_pattern or {}, short, config.lora_alpha)
        # keys of a PeftModel's state dict carry "base_model.model."; a plain model's do not
        key = name if name in eva_state_dict else short
        if key in eva_state_dict and _is_eva_layer(module):
            components = eva_state_dict.pop(key)
            new_r = components.shape[0]
            if new_r == 0:
                _drop(model, name, module, adapter_name)
                continue
            if new_r != r and eva.adjust_scaling_factors:
                alpha = alpha * new_r / r
            if new_r != r:
                _rebuild(module, adapter_name, config, short, new_r, alpha, "eva")
            weight = module.lora_A[adapter_name].weight
            if components.shape[1] != weight.shape[1]:
                raise ConfigError(f"eva_state_dict[{name!r}] has {components.shape[1]} features but the layer takes "
                                  f"{weight.shape[1]}; was it computed for another model?")
            weight.copy_(components)
            kept.append(short)
        else:
            # layers EVA does not fit (embeddings, convolutions) get LoRA's default init, as in PEFT
            _rebuild(module, adapter_name, config, short, r, alpha, True)
            fallback.append(short)
            new_r = r
        if new_r != config.r:
            rank_pattern[short] = new_r
        if alpha != config.lora_alpha:
            alpha_pattern[short] = alpha
    if eva_state_dict:
        raise ConfigError(f"eva_state_dict has entries for modules without an adapter {adapter_name!r}: "
                          f"{sorted(eva_state_dict)[:5]}; compute it on this PeftModel.")
    targets = kept + fallback
    if len(targets) >= MIN_TARGETS_TO_SHORTEN:
        targets = shortest_distinguishing_suffixes(targets, others)
    config.target_modules = targets
    config.rank_pattern = rank_pattern
    config.alpha_pattern = alpha_pattern
    tuner = getattr(model, "base_model", None)
    if tuner is not None and hasattr(tuner, "_layers_cache"):
        tuner._layers_cache = None
    if fallback:
        warnings.warn(f"EVA does not initialise these LoRA layers (only linear layers are supported); they got "
                      f"init_lora_weights=True instead: {fallback}", UserWarning, stacklevel=3)
