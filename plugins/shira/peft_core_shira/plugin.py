"""The SHiRA plugin: registers ``SHIRA`` (entry point ``peft_core: shira``)."""

from __future__ import annotations

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import ShiraConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .layer import create_shira_layer


class ShiraModel(AdapterModel):
    """PEFT's tuner name, so ``ShiraModel(model, config, "default")`` works; the generic tuner does the work."""


UNSUPPORTED = {
    Capability.WEIGHTED_COMBINE: "adapters with different masks have no common sparse support to combine on "
                                 "(PEFT has no add_weighted_adapter for SHiRA either)",
    Capability.HOTSWAP: "the SHiRA plugin does not implement the hotswap hook yet",
    Capability.MIXED_METHODS: "mixed-method models are not declared for SHiRA",
}


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="SHIRA",
            config_class=ShiraConfig,
            prefix="shira_",
            layer_factory=create_shira_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.QUANTIZED_BASE},
            unsupported=UNSUPPORTED,
            exports={"ShiraModel": ShiraModel},
            description="Sparse high-rank adaptation: a fixed sparse set of weight entries is trained directly.",
            paper="https://arxiv.org/abs/2406.13175",
        )
    )
