"""The VeRA plugin: registers ``VERA`` (entry point ``peft_core: vera``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.bias import trained_biases
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry

from .config import VeraConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .layer import create_vera_layer
from .model import VeraModel
from .projections import check_loaded_projections, init_shared

NAME = "VERA"
PREFIX = "vera_"


def _biases(model: nn.Module, config: Any) -> Any:
    return trained_biases(model, config, NAME, PREFIX)


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name=NAME,
            config_class=VeraConfig,
            # covers the trained vera_lambda_* vectors and the tuner-level vera_A/vera_B projections
            prefix=PREFIX,
            layer_factory=create_vera_layer,
            capabilities=LAYER_METHOD_CAPABILITIES,
            unsupported={
                Capability.WEIGHTED_COMBINE: "the change λ_b·B·λ_d·A is bilinear in the two trained vectors, so a "
                                             "weighted sum of VeRA adapters is not a VeRA adapter",
                Capability.HOTSWAP: "not implemented for VeRA; load the adapter with load_adapter and set_adapter",
                Capability.QUANTIZED_BASE: "not yet validated by the shared quantized-base conformance checks (the "
                                           "forward on bitsandbytes layers equals PEFT's, but the merge round trip "
                                           "and training checks on quantized bases do not pass yet)",
                Capability.MIXED_METHODS: "VeRA adapters are not tested next to other methods' adapters",
            },
            extra_parameters=_biases,
            init_shared=init_shared,
            exports={"VeraModel": VeraModel},
            description="Vector-based random matrix adaptation: trained scaling vectors over frozen random projections shared by all layers.",
            paper="https://arxiv.org/abs/2310.11454",
        )
    )


@hookimpl
def peft_core_state_dict_post_load(spec: MethodSpec, config: Any, adapter_name: str, model: nn.Module,
                                   state_dict: dict[str, torch.Tensor]) -> None:
    if spec.name == NAME:
        check_loaded_projections(config, adapter_name, model, state_dict)
