"""The BOFT plugin: registers ``BOFT`` (entry point ``peft_core: boft``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.bias import trained_biases
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import BOFTConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (BOFT's cases for the shared suite)
from .layer import create_boft_layer


class BOFTModel(AdapterModel):
    """The generic tuner under PEFT's name for BOFT, so ``BOFTModel(model, config, "default")`` works."""


def bias_parameters(model: nn.Module, config: BOFTConfig) -> Iterable[str]:
    """Base-model biases BOFT trains and saves (``bias="all"`` or ``"boft_only"``)."""
    return trained_biases(model, config, "BOFT", "boft_")


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="BOFT",
            config_class=BOFTConfig,
            prefix="boft_",
            layer_factory=create_boft_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.MIXED_METHODS},
            unsupported={
                Capability.WEIGHTED_COMBINE: "rotations do not add; combining BOFT adapters linearly has no meaning",
                Capability.QUANTIZED_BASE: "not tested on quantized bases yet",
                Capability.HOTSWAP: "not implemented for BOFT",
            },
            extra_parameters=bias_parameters,
            exports={"BOFTModel": BOFTModel},
            description="Butterfly orthogonal fine-tuning: a butterfly product of block-diagonal rotations of each "
                        "layer's input, plus a per-output scale.",
            paper="https://arxiv.org/abs/2311.06243",
        )
    )


@hookimpl
def peft_core_state_dict_post_load(spec: Any, config: Any, adapter_name: str, model: nn.Module,
                                   state_dict: dict[str, torch.Tensor]) -> None:
    """Read adapters saved where PEFT had no CUDA extension: it then keeps one butterfly factor only.

    PEFT without its extension silently trains ``boft_R`` with a single factor whatever
    ``boft_n_butterfly_factor`` says. The missing factors are zero skew blocks, i.e. the
    identity, so padding with zeros gives exactly the rotation PEFT computed.
    """
    if not isinstance(config, BOFTConfig) or config.boft_n_butterfly_factor == 1:
        return
    for key, value in list(state_dict.items()):
        if key.endswith("boft_R") and value.dim() == 4 and value.shape[0] < config.boft_n_butterfly_factor:
            pad = value.new_zeros(config.boft_n_butterfly_factor - value.shape[0], *value.shape[1:])
            state_dict[key] = torch.cat([value, pad])
