"""The MiSS plugin: registers ``MISS`` (entry point ``peft_core: miss``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import MissConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .layer import create_miss_layer


class MissModel(AdapterModel):
    """PEFT's tuner name, so ``MissModel(model, config, "default")`` works; the generic tuner does the work."""


UNSUPPORTED = {
    Capability.WEIGHTED_COMBINE: "combining MiSS shards is not implemented (bat updates are not linear in the shard; "
                                 "PEFT has no add_weighted_adapter for MiSS either)",
    Capability.HOTSWAP: "the MiSS plugin does not implement the hotswap hook yet",
    Capability.MIXED_METHODS: "mixed-method models are not declared for MiSS (bat updates depend on the base weight)",
}


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="MISS",
            config_class=MissConfig,
            prefix="miss_",
            layer_factory=create_miss_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.QUANTIZED_BASE},
            unsupported=UNSUPPORTED,
            exports={"MissModel": MissModel},
            description="Matrix shard sharing: one small trainable shard shared across the shards of a frozen weight.",
            paper="https://arxiv.org/abs/2409.15371",
        )
    )


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    """Training base biases (``bias="all"``/``"MiSS_only"``) is not implemented: say so before building."""
    if not isinstance(config, MissConfig):
        return None
    if config.bias != "none":
        return [f"bias={config.bias!r} (training base-layer biases) is not supported by peft-core-miss; use "
                "bias='none', or train the biases you need through modules_to_save"]
    return []
