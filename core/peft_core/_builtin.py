"""The core's own hook implementations: plain ``torch.nn`` layers and default layer creation.

Registered like any third-party plugin. Everything here is ``trylast`` so that a backend
plugin (bitsandbytes, …) answers first for the module types it knows.
"""

from __future__ import annotations

import torch
from torch import nn

from .hookspecs import hookimpl
from .weights import CONV, EMBEDDING, LINEAR, NORM, LayerDescription

try:  # transformers is a dependency, but keep the core importable without it
    from transformers.pytorch_utils import Conv1D
except Exception:  # pragma: no cover
    Conv1D = None

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _is_norm(module: nn.Module) -> bool:
    # transformers' RMSNorm classes (LlamaRMSNorm, …) share no base class; their names do
    return isinstance(module, _NORMS) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


@hookimpl(trylast=True)
def peft_core_describe_layer(module: nn.Module) -> LayerDescription | None:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    common = {"dtype": weight.dtype, "device": weight.device}
    if isinstance(module, nn.Linear):
        return LayerDescription(LINEAR, module.in_features, module.out_features, **common)
    if Conv1D is not None and isinstance(module, Conv1D):
        n_in, n_out = weight.shape
        return LayerDescription(LINEAR, n_in, n_out, fan_in_fan_out=True, **common)
    if isinstance(module, nn.Embedding):
        return LayerDescription(EMBEDDING, module.num_embeddings, module.embedding_dim, **common)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return LayerDescription(
            CONV,
            module.in_channels,
            module.out_channels,
            kernel_size=tuple(module.kernel_size),
            extra={"stride": module.stride, "padding": module.padding, "dilation": module.dilation,
                   "groups": module.groups},
            **common,
        )
    if _is_norm(module) and weight.dim() == 1:
        return LayerDescription(NORM, weight.shape[0], weight.shape[0], **common)
    return None


def _transposed(module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding) or (Conv1D is not None and isinstance(module, Conv1D))


@hookimpl(trylast=True)
def peft_core_dense_weight(module: nn.Module) -> torch.Tensor | None:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or type(weight) not in (torch.Tensor, nn.Parameter):
        return None  # quantized tensor subclasses are a backend's business
    weight = weight.detach()
    return weight.T if _transposed(module) else weight


@hookimpl(trylast=True)
def peft_core_write_dense_weight(module: nn.Module, weight: torch.Tensor) -> bool | None:
    current = getattr(module, "weight", None)
    if not isinstance(current, torch.Tensor) or type(current) not in (torch.Tensor, nn.Parameter):
        return None
    if _transposed(module):
        weight = weight.T
    with torch.no_grad():
        current.copy_(weight.to(current.dtype))
    return True


@hookimpl(trylast=True)
def peft_core_create_adapter_layer(spec, target, module_name, description, config, adapter_name):
    if spec.layer_factory is None:
        return None
    return spec.layer_factory(target, description, config, adapter_name, module_name=module_name)
