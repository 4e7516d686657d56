"""The LoRA plugin: registers ``LORA`` and opens the variant hooks (entry point ``peft_core: lora``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.bias import trained_biases
from peft_core.plugins import hook
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.targeting import TargetMatcher, walk_modules

from . import hookspecs
from .combine import peft_core_combine_adapters  # noqa: F401  (hook implementations registered with this module)
from .hotswap import peft_core_hotswap_support  # noqa: F401
from .conformance import peft_core_conformance_cases  # noqa: F401  (LoRA's cases for the shared suite)
from .config import LoraConfig
from .layer import create_lora_layer
from .model import LoraModel
from .optimizers import LoraFAOptimizer, create_lorafa_optimizer, create_loraplus_optimizer

#: variant switches of LoraConfig and the plugin that serves each
KNOWN_VARIANT_FLAGS = {"use_dora": "peft-core-dora"}


def bias_parameters(model: nn.Module, config: LoraConfig) -> Iterable[str]:
    """Base-model biases LoRA trains and saves: every bias (``"all"``) or those of its layers (``"lora_only"``)."""
    return trained_biases(model, config, "LORA", "lora_")


def served_extensions() -> tuple[list[str], list[str]]:
    """``(fields, inits)`` the installed extension plugins serve."""
    fields: list[str] = []
    inits: list[str] = []
    for served in hook().peft_core_lora_extensions():
        fields.extend((served or {}).get("fields", ()))
        inits.extend((served or {}).get("inits", ()))
    return fields, inits


def adapter_injected(tuner: Any, config: LoraConfig, adapter_name: str) -> None:
    """LoRA's ``init_shared``: let extensions add their modules to the new adapter (trainable tokens)."""
    hook().peft_core_lora_adapter_injected(tuner=tuner, config=config, adapter_name=adapter_name)


def variant_for(config: LoraConfig, layer_kind: str) -> Any:
    return hook().peft_core_lora_variant(config=config, layer_kind=layer_kind)


@hookimpl
def peft_core_addhooks(plugin_manager: Any) -> None:
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="LORA",
            config_class=LoraConfig,
            prefix="lora_",
            layer_factory=create_lora_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.QUANTIZED_BASE, Capability.WEIGHTED_COMBINE, Capability.HOTSWAP,
                                                       Capability.MIXED_METHODS},
            extra_parameters=bias_parameters,
            init_shared=adapter_injected,
            exports={"LoraModel": LoraModel, "create_loraplus_optimizer": create_loraplus_optimizer,
                     "create_lorafa_optimizer": create_lorafa_optimizer, "LoraFAOptimizer": LoraFAOptimizer},
            description="Low-rank adaptation: a trainable low-rank update B·A added to frozen weights.",
            paper="https://arxiv.org/abs/2106.09685",
        )
    )


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    if not isinstance(config, LoraConfig):
        return None
    fields, inits = served_extensions()
    problems = config.unsupported_fields(fields, inits)
    served: dict[str, str] = {}
    for flags in hook().peft_core_lora_variant_flags():
        served.update(flags or {})
    for flag, dist in KNOWN_VARIANT_FLAGS.items():
        if getattr(config, flag) and flag not in served:
            problems.append(f"{flag}=True needs the {dist} plugin: pip install {dist}")
    _check_fan_in_fan_out(config, model)
    return problems


def _check_fan_in_fan_out(config: LoraConfig, model: nn.Module) -> None:
    """Keep ``fan_in_fan_out`` truthful for PEFT readers: True exactly when targets store W transposed."""
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # pragma: no cover
        return
    from peft_core.layer import base_of

    # only the walk below can find a target, so the early-out skips adapter layers' insides too (loading
    # the 30th adapter walked every adapter module of every layer here)
    has_conv1d = any(isinstance(base_of(m), Conv1D) for _, m in walk_modules(model))
    if has_conv1d and not config.fan_in_fan_out and config.target_modules is not None:
        # the real target rules (lists, dotted suffixes, regexes, "all-linear"), as PEFT sees each Conv1D it wraps
        matcher = TargetMatcher(config, model)
        if any(n and isinstance(base_of(m), Conv1D) and matcher.targeted(n, m) and not matcher.excluded(n)
               for n, m in walk_modules(model)):
            warnings.warn("target modules are Conv1D layers (GPT-2 style); setting fan_in_fan_out=True.", UserWarning, stacklevel=2)
            config.fan_in_fan_out = True
