"""The GraLoRA plugin: registers ``GRALORA`` (entry point ``peft_core: gralora``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import GraloraConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .layer import create_gralora_layer


class GraloraModel(AdapterModel):
    """PEFT's tuner name, so ``GraloraModel(model, config, "default")`` works; the generic tuner does the work."""


UNSUPPORTED = {
    Capability.WEIGHTED_COMBINE: "combining GraLoRA block grids is not implemented (PEFT has none for GraLoRA either)",
    Capability.HOTSWAP: "the GraLoRA plugin does not implement the hotswap hook yet",
    Capability.MIXED_METHODS: "mixed-method models are not declared for GraLoRA",
}


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="GRALORA",
            config_class=GraloraConfig,
            prefix="gralora_",
            layer_factory=create_gralora_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.QUANTIZED_BASE},
            unsupported=UNSUPPORTED,
            exports={"GraloraModel": GraloraModel},
            description="Granular low-rank adaptation: a k×k grid of blocks, each with its own low-rank pair.",
            paper="https://arxiv.org/abs/2505.20355",
        )
    )


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    """Training base biases (``bias="all"``/``"gralora_only"``) is not implemented: say so before building."""
    if not isinstance(config, GraloraConfig):
        return None
    if config.bias != "none":
        return [f"bias={config.bias!r} (training base-layer biases) is not supported by peft-core-gralora; use "
                "bias='none', or train the biases you need through modules_to_save"]
    return []
