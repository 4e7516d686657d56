"""The HiRA plugin: registers ``HIRA`` (entry point ``peft_core: hira``)."""

from __future__ import annotations

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import HiraConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .layer import create_hira_layer


class HiraModel(AdapterModel):
    """PEFT's tuner name, so ``HiraModel(model, config, "default")`` works; the generic tuner does the work."""


UNSUPPORTED = {
    Capability.WEIGHTED_COMBINE: "a weighted sum of HiRA factors is not a weighted sum of the W ⊙ BA updates; "
                                 "PEFT has no add_weighted_adapter for HiRA either",
    Capability.HOTSWAP: "the HiRA plugin does not implement the hotswap hook yet",
    Capability.MIXED_METHODS: "mixed-method models are not declared for HiRA (each layer modulates its own base weight)",
}


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="HIRA",
            config_class=HiraConfig,
            prefix="hira_",
            layer_factory=create_hira_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.QUANTIZED_BASE},
            unsupported=UNSUPPORTED,
            exports={"HiraModel": HiraModel},
            description="High-rank adaptation: the frozen weight, modulated entry-wise by a low-rank update (W ⊙ BA).",
            paper="https://openreview.net/forum?id=TwJrTz9cRS",
        )
    )
