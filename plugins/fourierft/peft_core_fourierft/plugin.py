"""The FourierFT plugin: registers ``FOURIERFT`` (entry point ``peft_core: fourierft``)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.bias import trained_biases
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import FourierFTConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (FourierFT's cases for the shared suite)
from .layer import create_fourierft_layer


class FourierFTModel(AdapterModel):
    """The generic tuner under PEFT's name, so ``FourierFTModel(model, config, "default")`` works."""


def bias_parameters(model: nn.Module, config: FourierFTConfig) -> Iterable[str]:
    """Base-model biases FourierFT trains and saves (``bias="all"`` or ``"fourier_only"``)."""
    return trained_biases(model, config, "FOURIERFT", "fourierft_")


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="FOURIERFT",
            config_class=FourierFTConfig,
            prefix="fourierft_",
            layer_factory=create_fourierft_layer,
            capabilities=LAYER_METHOD_CAPABILITIES,
            unsupported={
                Capability.WEIGHTED_COMBINE: "adapters with different seeds put their coefficients at different "
                "frequencies; PEFT has no add_weighted_adapter for FourierFT either",
                Capability.HOTSWAP: "not implemented for FourierFT",
                Capability.QUANTIZED_BASE: "not tested on quantized bases",
                Capability.MIXED_METHODS: "not tested together with other methods' layers",
            },
            extra_parameters=bias_parameters,
            exports={"FourierFTModel": FourierFTModel},
            description="FourierFT: weight updates as learned spectral coefficients at seeded random frequencies.",
            paper="https://arxiv.org/abs/2405.03003",
        )
    )
