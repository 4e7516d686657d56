"""The IA³ plugin: registers ``IA3`` (entry point ``peft_core: ia3``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry

from .combine import peft_core_combine_adapters  # noqa: F401  (hook implementations registered with this module)
from .config import IA3Config
from .conformance import peft_core_conformance_cases  # noqa: F401
from .layer import create_ia3_layer
from .model import IA3Model


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="IA3",
            config_class=IA3Config,
            prefix="ia3_",
            layer_factory=create_ia3_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.WEIGHTED_COMBINE, Capability.QUANTIZED_BASE, Capability.MIXED_METHODS},
            exports={"IA3Model": IA3Model},
            description="Infused adapters: learned vectors rescale the inputs or outputs of frozen layers.",
            paper="https://arxiv.org/abs/2205.05638",
        )
    )


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    """Fill ``feedforward_modules`` from the model type when unset (as PEFT does), or say to set it."""
    if not isinstance(config, IA3Config):
        return None
    if config.feedforward_modules is not None:
        return []
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    defaults = config.default_feedforward_modules(model_type)
    if defaults is None:
        return [
            f"feedforward_modules is not set and there is no default for model type {model_type!r}; pass "
            "feedforward_modules (the targets whose input is scaled: a list, [] for none, or a regex)"
        ]
    config.feedforward_modules = set(defaults)
    return []
