"""VeRA's shared random projections: drawn from the key, sized to the adapter's largest layer, held on the tuner.

PEFT draws ``A`` (``r × in``) and then ``B`` (``out × r``) from one CPU generator seeded with
``projection_prng_key``, each Kaiming-uniform over its second dimension (bound
``√3 · √2 / √fan_in``), so the same key and sizes give the same projections on any machine;
that is what lets ``save_projection=False`` files leave them out. Each adapter here has its own
pair (in ``tuner.shared_tensors``), sized to its own layers: an adapter behaves the same whether
it was added next to others or loaded alone.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from peft_core.errors import LoadError
from peft_core.shared import TUNER_DISK_PREFIX

PROJECTIONS = ("vera_A", "vera_B")


def _kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    fan_in = shape[1]
    bound = math.sqrt(3.0) * (math.sqrt(2) / math.sqrt(fan_in))  # the order PEFT computes it in: same float
    return torch.empty(shape, device="cpu").uniform_(-bound, bound, generator=generator)


def projection_pair(key: int, r: int, in_features: int, out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vera_A, vera_B)`` of shapes ``(r, in_features)`` and ``(out_features, r)`` for ``key``."""
    generator = torch.Generator(device="cpu").manual_seed(key)
    vera_a = _kaiming_uniform((r, in_features), generator)
    vera_b = _kaiming_uniform((out_features, r), generator)
    return vera_a, vera_b


def _layers(root: nn.Module, adapter_name: str) -> list[Any]:
    from .layer import VeraLinear

    return [m for m in root.modules() if isinstance(m, VeraLinear) and m.has_adapter(adapter_name)]


def init_shared(tuner: Any, config: Any, adapter_name: str) -> None:
    """``MethodSpec.init_shared`` of VeRA: draw the adapter's projections and point its layers at them."""
    layers = _layers(tuner.model, adapter_name)
    largest_in = max(layer.description.in_features for layer in layers)
    largest_out = max(layer.description.out_features for layer in layers)
    vera_a, vera_b = projection_pair(config.projection_prng_key, config.r, largest_in, largest_out)
    device = layers[0].vera_lambda_d[adapter_name].device
    for name, tensor in zip(PROJECTIONS, (vera_a, vera_b)):
        tuner.shared_tensors.add(name, adapter_name, tensor.to(device), persistent=config.save_projection)
    for layer in layers:
        layer.attach_projections(tuner.shared_tensors)


def check_loaded_projections(config: Any, adapter_name: str, model: nn.Module,
                             state_dict: dict[str, torch.Tensor]) -> None:
    """Before a VeRA state dict is copied in: make room for its projections, or say what is wrong.

    A file written by PEFT from a model holding several adapters carries the *first* adapter's
    projections, which may be larger than this adapter's layers need; the saved pair is
    authoritative, so the adapter's stored pair takes its shape before the copy.
    """
    keys = [TUNER_DISK_PREFIX + name for name in PROJECTIONS]
    present = [k for k in keys if k in state_dict]
    if not config.save_projection:
        if present:
            warnings.warn("the VeRA adapter file holds vera_A/vera_B but its config has save_projection=False; "
                          "they are ignored and the projections drawn from projection_prng_key are used.",
                          UserWarning, stacklevel=4)
            for key in present:
                del state_dict[key]
        return
    if len(present) != len(keys):
        raise LoadError(
            f"the VeRA adapter {adapter_name!r} has save_projection=True but the file lacks "
            f"{', '.join(sorted(set(keys) - set(present)))}; the file is incomplete. Save it again, or set "
            "save_projection=False in adapter_config.json to draw the projections from projection_prng_key."
        )
    layers = _layers(model, adapter_name)
    if not layers:
        return
    store = layers[0].shared_tensors
    vera_a, vera_b = state_dict[keys[0]], state_dict[keys[1]]
    need_in = max(layer.description.in_features for layer in layers)
    need_out = max(layer.description.out_features for layer in layers)
    if vera_a.dim() != 2 or vera_b.dim() != 2 or vera_a.shape[0] != config.r or vera_b.shape[1] != config.r \
            or vera_a.shape[1] < need_in or vera_b.shape[0] < need_out:
        raise LoadError(
            f"the saved VeRA projections vera_A {tuple(vera_a.shape)} / vera_B {tuple(vera_b.shape)} do not fit "
            f"adapter {adapter_name!r} (r={config.r}, layers up to {need_in} inputs and {need_out} outputs); "
            "the adapter was trained on another base model or with another r."
        )
    for name, saved in zip(PROJECTIONS, (vera_a, vera_b)):
        current = store.get(name, adapter_name)
        if current.shape != saved.shape:
            store.add(name, adapter_name, current.new_zeros(saved.shape), persistent=True)
