"""Merge checks on models whose weights are stored lossily (quantized bases).

Merging into a quantized layer requantizes, so a merged model cannot give the unmerged output
exactly, and on tiny models the rounding moves outputs by as much as the adapter does: an
output tolerance loose enough to pass would pass a broken merge too. So on such kinds
(``ModelKind.lossy_merge``) the merge checks compare *weights* instead, against a reference
measured independently of the method's merge code: the weight the unmerged layer computes
with, read off by feeding it the identity matrix. Merging must write that weight within the
backend's documented rounding (``peft_core_weight_rounding``); unmerging must give back the
original weight within two roundings (one for the merge, one for the unmerge).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..layer import AdapterLayer, base_of
from ..plugins import hook
from ..weights import LINEAR, dense_weight
from .cases import Case, adapter_layers

#: bitsandbytes runs 8-bit matmuls in float16: the probe itself reads the weight to half precision
PROBE_RELATIVE = 2.0**-10
PROBE_ABSOLUTE = 1e-5


def linear_layers(model: Any) -> list[tuple[str, AdapterLayer]]:
    """The outermost adapter layers on linear modules (the ones a probe can read)."""
    return [(p, layer) for p, layer in adapter_layers(model)
            if layer.description.kind == LINEAR and ".base_layer" not in p]


def effective_weight(layer: AdapterLayer) -> torch.Tensor:
    """``(out, in)``: the linear map the layer computes now (base, adapters, merges and all)."""
    d = layer.description
    dtype = torch.float32 if d.dtype not in (torch.float16, torch.bfloat16) else d.dtype
    eye = torch.eye(d.in_features, dtype=dtype, device=d.device)
    with torch.no_grad():
        out = layer(eye) - layer(torch.zeros(1, d.in_features, dtype=dtype, device=d.device))
    return out.float().T


def _through_unmerge(layer: AdapterLayer, merged: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """How far the merge's rounding can move what unmerging computes: the bound carried through the unmerge map.

    An additive adapter's unmerge subtracts a fixed delta and carries the rounding over
    unchanged; one that rescales (DoRA divides rows by its magnitude factor) scales it too.
    The map is the layer's own ``unmerged_weight``, applied to the merged weight with and
    without the bound added; what is compared afterwards is still the original weight.
    """
    if isinstance(layer.base_layer, AdapterLayer) or all(layer.merges_additively(n) for n in layer.merged_adapters):
        return bound
    spread = []
    with torch.no_grad():
        for weight in (merged.clone(), merged + bound):
            twin = copy.deepcopy(layer)  # an unmerge may use up state the layer keeps (MiSS keeps the old weight)
            for name in reversed(twin.merged_adapters):
                weight = twin.unmerged_weight(weight, name)
            spread.append(weight.float())
    return (spread[1] - spread[0]).abs()


def writes(layer: AdapterLayer) -> int:
    """How many times merging wrote (and so rounded) this module's weight: once per merged adapter of its stack."""
    count = 0
    while isinstance(layer, AdapterLayer):
        count += len(layer.merged_adapters)
        layer = layer.base_layer
    return max(count, 1)


def rounding(layer: AdapterLayer, weight: torch.Tensor) -> torch.Tensor:
    bound = hook().peft_core_weight_rounding(module=base_of(layer), weight=weight)
    return torch.zeros_like(weight) if bound is None else bound.float()


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {path: effective_weight(layer) for path, layer in linear_layers(model)}


def base_weights(model: Any) -> dict[str, torch.Tensor]:
    return {path: dense_weight(layer).float().clone() for path, layer in linear_layers(model)}


def _slack(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs() * PROBE_RELATIVE + PROBE_ABSOLUTE


def assert_merged(model: Any, expected: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Each layer's stored weight is the weight its unmerged form computed with, within the merges' rounding.

    Returns the bounds, taken from the scales the layers hold right after the merge (an
    unmerge requantizes with new scales), for :func:`assert_restored`.
    """
    layers = dict(linear_layers(model))
    if not expected:
        raise AssertionError(f"{what}: the adapter wraps no linear layer to check on a quantized model")
    bounds = {}
    for path, want in expected.items():
        layer = layers[path]
        got = dense_weight(layer).float()
        err = (got - want).abs()
        bound = (rounding(layer, want) + _slack(want)) * writes(layer)
        bounds[path] = _through_unmerge(layer, want, bound)
        if not err.le(bound).all():
            worst = (err - bound).argmax()
            raise AssertionError(f"{what}: layer {path!r} stores a weight off the unmerged layer's by "
                                 f"{err.reshape(-1)[worst]:.3g}, beyond the backend's rounding {bound.reshape(-1)[worst]:.3g}")
    return bounds


def assert_restored(model: Any, original: dict[str, torch.Tensor], merge_bounds: dict[str, torch.Tensor],
                    what: str) -> None:
    """After unmerging, each base weight is the original within the merge's and the unmerge's rounding."""
    layers = dict(linear_layers(model))
    for path, want in original.items():
        layer = layers[path]
        got = dense_weight(layer).float()
        bound = merge_bounds[path] + rounding(layer, want) + _slack(want)
        if not (got - want).abs().le(bound).all():
            raise AssertionError(f"{what}: layer {path!r} base weight off the original by "
                                 f"{(got - want).abs().max():.3g}, beyond two roundings")


def is_lossy(case: Case) -> bool:
    return bool(getattr(case.model_kind, "lossy_merge", False))


def assert_unloaded(model: Any, expected: dict[str, torch.Tensor], what: str) -> None:
    """After ``merge_and_unload``, the plain modules at the adapted paths store the merged weights."""
    layers = {path: model.get_submodule(path) for path in expected}
    for path, want in expected.items():
        module = layers[path]
        got = dense_weight(module).float()
        bound = hook().peft_core_weight_rounding(module=module, weight=want)
        bound = (torch.zeros_like(want) if bound is None else bound.float()) + _slack(want)
        if not (got - want).abs().le(bound).all():
            raise AssertionError(f"{what}: module {path!r} weight off the unmerged layer's by "
                                 f"{(got - want).abs().max():.3g}, beyond the backend's rounding")
