"""The LoHa plugin: registers ``LOHA`` (entry point ``peft_core: loha``)."""

from __future__ import annotations

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import LoHaConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (LoHa's cases for the shared suite)
from .layer import create_loha_layer


class LoHaModel(AdapterModel):
    """The generic tuner under PEFT's name for LoHa, so ``LoHaModel(model, config, "default")`` works."""


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="LOHA",
            config_class=LoHaConfig,
            prefix="hada_",
            layer_factory=create_loha_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.QUANTIZED_BASE, Capability.MIXED_METHODS},
            unsupported={
                Capability.WEIGHTED_COMBINE: ("add_weighted_adapter is not implemented for LoHa "
                                              "(Hugging Face PEFT has none either)"),
                Capability.HOTSWAP: "hot-swapping is not implemented for LoHa (no peft_core_hotswap_support)",
            },
            exports={"LoHaModel": LoHaModel},
            description="Low-rank Hadamard product (LyCORIS): ΔW = (w1a w1b) ⊙ (w2a w2b) · alpha / r.",
            paper="https://arxiv.org/abs/2108.06098",
        )
    )
