"""The DeLoRA plugin: registers ``DELORA`` (entry point ``peft_core: delora``)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.bias import trained_biases
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import DeloraConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (DeLoRA's cases for the shared suite)
from .layer import create_delora_layer


class DeloraModel(AdapterModel):
    """The generic tuner under PEFT's name, so ``DeloraModel(model, config, "default")`` works."""


def bias_parameters(model: nn.Module, config: DeloraConfig) -> Iterable[str]:
    """Base-model biases DeLoRA trains and saves (``bias="all"`` or ``"delora_only"``)."""
    return trained_biases(model, config, "DELORA", "delora_")


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="DELORA",
            config_class=DeloraConfig,
            prefix="delora_",
            layer_factory=create_delora_layer,
            capabilities=LAYER_METHOD_CAPABILITIES,
            unsupported={
                Capability.WEIGHTED_COMBINE: "a weighted sum of normalized updates is not a DeLoRA update (its norm "
                "bound and per-adapter λ do not combine); PEFT has no add_weighted_adapter for DeLoRA either",
                Capability.HOTSWAP: "not implemented for DeLoRA",
                Capability.QUANTIZED_BASE: "not tested on quantized bases",
                Capability.MIXED_METHODS: "not tested together with other methods' layers",
            },
            extra_parameters=bias_parameters,
            exports={"DeloraModel": DeloraModel},
            description="DeLoRA: low-rank updates normalized per rank-one term and bounded by a learned λ.",
            paper="https://arxiv.org/abs/2503.18225",
        )
    )
