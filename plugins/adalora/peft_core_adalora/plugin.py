"""The AdaLoRA plugin: registers ``ADALORA`` (entry point ``peft_core: adalora``).

Besides the layer, AdaLoRA needs three things from the core, each through a generic door:
``update_and_allocate`` on the tuner (``MethodSpec.tuner_methods``), its orthogonality
penalty in the loss (the ``peft_core_extra_loss`` hook), and the rank allocation written
to and read from disk the way PEFT does it (the state-dict hooks: pruned triplets are cut
out of the saved tensors and put back as zeros on load). It stores its tensors under
LoRA's ``lora_`` names, as PEFT does, which the registry allows through
``shares_prefix_with``: the layers are distinct classes and the two methods never share
a model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import MethodRegistry
from peft_core.serialization import DISK_PREFIX

from .allocator import update_and_allocate
from .config import AdaLoraConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (AdaLoRA's cases for the shared suite)
from .layer import AdaLoraLinear, create_adalora_layer
from .model import AdaLoraModel

CAPABILITIES = frozenset({Capability.MERGE, Capability.UNLOAD, Capability.DISABLE, Capability.MIXED_BATCH,
                          Capability.IDENTITY_AT_INIT})


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="ADALORA",
            config_class=AdaLoraConfig,
            prefix="lora_",
            shares_prefix_with=("LORA",),
            layer_factory=create_adalora_layer,
            capabilities=CAPABILITIES,
            unsupported={
                Capability.MULTI_ADAPTER: "the rank allocator trains one AdaLoRA adapter per model (PEFT refuses a "
                                          "second trainable one); use a separate model per adapter",
                Capability.MULTI_ACTIVE: "one AdaLoRA adapter per model",
                Capability.WEIGHTED_COMBINE: "PEFT offers no add_weighted_adapter for AdaLoRA; use LoRA",
                Capability.MIXED_METHODS: "AdaLoRA shares LoRA's tensor names; it cannot sit next to other methods",
            },
            tuner_methods={"update_and_allocate": update_and_allocate},
            exports={"AdaLoraModel": AdaLoraModel},
            description="Adaptive budget allocation: SVD-form low-rank updates whose ranks are pruned to a budget.",
            paper="https://arxiv.org/abs/2303.10512",
        )
    )


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    if not isinstance(config, AdaLoraConfig):
        return None
    problems = []
    if config.bias != "none":
        problems.append(f"bias={config.bias!r} is not supported by peft-core-adalora; use bias='none'")
    if config.lora_bias:
        problems.append("lora_bias=True is not supported by AdaLoRA")
    return problems


@hookimpl
def peft_core_extra_loss(spec: MethodSpec, config: Any, adapter_name: str, tuner: nn.Module,
                         outputs: Any) -> torch.Tensor | None:
    """``orth_reg_weight`` × the mean of ``‖AAᵀ−I‖_F`` and ``‖BᵀB−I‖_F`` over the adapter's layers."""
    if spec.name != "ADALORA" or not config.orth_reg_weight:
        return None
    norms = [n for _, layer in tuner.adapter_layers()
             if isinstance(layer, AdaLoraLinear) and layer.has_adapter(adapter_name)
             for n in layer.orth_penalty(adapter_name)]
    return config.orth_reg_weight * torch.stack(norms).mean() if norms else None


def _triplet_tensors(config: Any, adapter_name: str, state_dict: dict[str, torch.Tensor]):
    """``(disk key, tensor, rank dim, kept mask)`` of every saved A, E, B the config's rank pattern covers.

    The pattern is keyed ``<path>.lora_E``; PEFT's in-memory keys also carry the adapter name.
    """
    suffix = f".lora_E.{adapter_name}"
    for key, keep in (config.rank_pattern or {}).items():
        prefix = DISK_PREFIX + (key[: -len(adapter_name) - 1] if key.endswith(suffix) else key)[: -len("lora_E")]
        for attr, dim in (("lora_A", 0), ("lora_E", 0), ("lora_B", 1)):
            tensor = state_dict.get(prefix + attr)
            if tensor is not None:
                yield prefix + attr, tensor, dim, torch.tensor(list(keep), dtype=torch.bool, device=tensor.device)


@hookimpl
def peft_core_state_dict_pre_save(spec: MethodSpec, config: Any, adapter_name: str, model: nn.Module,
                                  state_dict: dict[str, torch.Tensor]) -> None:
    """Cut pruned triplets out of the saved tensors, as PEFT writes an allocated adapter."""
    if spec.name != "ADALORA":
        return
    for key, tensor, dim, keep in list(_triplet_tensors(config, adapter_name, state_dict)):
        if tensor.shape[dim] == len(keep) != int(keep.sum()):
            state_dict[key] = tensor.index_select(dim, keep.nonzero().view(-1))


@hookimpl
def peft_core_state_dict_post_load(spec: MethodSpec, config: Any, adapter_name: str, model: nn.Module,
                                   state_dict: dict[str, torch.Tensor]) -> None:
    """Put pruned triplets back as zeros (the layer keeps ``init_r``) and mask E by the saved pattern."""
    if spec.name != "ADALORA":
        return
    for key, tensor, dim, keep in list(_triplet_tensors(config, adapter_name, state_dict)):
        if tensor.shape[dim] == int(keep.sum()) != len(keep):
            shape = list(tensor.shape)
            shape[dim] = len(keep)
            state_dict[key] = tensor.new_zeros(shape).index_copy(dim, keep.nonzero().view(-1), tensor)
        elif key.endswith("lora_E") and tensor.shape[0] == len(keep):
            state_dict[key] = tensor.masked_fill(~keep.view(-1, 1), 0.0)
