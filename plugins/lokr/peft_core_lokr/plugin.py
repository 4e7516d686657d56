"""The LoKr plugin: registers ``LOHA`` (entry point ``peft_core: lokr``)."""

from __future__ import annotations

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import LoKrConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (LoKr's cases for the shared suite)
from .layer import create_lokr_layer


class LoKrModel(AdapterModel):
    """The generic tuner under PEFT's name for LoKr, so ``LoKrModel(model, config, "default")`` works."""


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="LOKR",
            config_class=LoKrConfig,
            prefix="lokr_",
            layer_factory=create_lokr_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.QUANTIZED_BASE, Capability.MIXED_METHODS},
            unsupported={
                Capability.WEIGHTED_COMBINE: ("add_weighted_adapter is not implemented for LoKr "
                                              "(Hugging Face PEFT has none either)"),
                Capability.HOTSWAP: "hot-swapping is not implemented for LoKr (no peft_core_hotswap_support)",
            },
            exports={"LoKrModel": LoKrModel},
            description="Low-rank Kronecker product (LyCORIS): ΔW = kron(w1, w2) · alpha / r.",
            paper="https://arxiv.org/abs/2309.14859",
        )
    )
