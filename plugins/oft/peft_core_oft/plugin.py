"""The OFT plugin: registers ``OFT`` (entry point ``peft_core: oft``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from torch import nn

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.errors import ConfigError
from peft_core.bias import trained_biases
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .config import OFTConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (OFT's cases for the shared suite)
from .layer import create_oft_layer


class OFTModel(AdapterModel):
    """The generic tuner under PEFT's name for OFT, so ``OFTModel(model, config, "default")`` works."""


def bias_parameters(model: nn.Module, config: OFTConfig) -> Iterable[str]:
    """Base-model biases OFT trains and saves (``bias="all"`` or ``"oft_only"``)."""
    return trained_biases(model, config, "OFT", "oft_")


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="OFT",
            config_class=OFTConfig,
            prefix="oft_",
            layer_factory=create_oft_layer,
            capabilities=LAYER_METHOD_CAPABILITIES | {Capability.MIXED_METHODS},
            unsupported={
                Capability.WEIGHTED_COMBINE: "rotations do not add; combining OFT adapters linearly has no meaning",
                Capability.QUANTIZED_BASE: "not tested on quantized bases yet",
                Capability.HOTSWAP: "not implemented for OFT",
            },
            extra_parameters=bias_parameters,
            exports={"OFTModel": OFTModel},
            description="Orthogonal fine-tuning: a trainable block-diagonal rotation of each layer's input features.",
            paper="https://arxiv.org/abs/2306.07280",
        )
    )


@hookimpl
def peft_core_upgrade_config(config_dict: dict[str, Any]) -> None:
    """Refuse OFT configs written before PEFT 0.14, whose adapters have another layout."""
    if str(config_dict.get("peft_type", "")).upper() != "OFT":
        return
    if "oft_block_size" not in config_dict:
        raise ConfigError(
            "this OFT adapter was saved by Hugging Face PEFT < 0.14 (no 'oft_block_size' in its config); OFT's "
            "weights changed layout in 0.14 and old adapters cannot be loaded. Retrain it with a current version "
            "(or load it with peft==0.13)."
        )
    if config_dict.get("use_cayley_neumann"):
        version = str(config_dict.get("peft_version") or "0.0.0").partition("@")[0]
        try:
            parts = tuple(int(p) for p in version.split(".")[:2])
        except ValueError:
            parts = (0, 0)
        if parts < (0, 18):
            warnings.warn(
                "this OFT adapter uses the Cayley-Neumann series as PEFT computed it before 0.18, which differs "
                "slightly from the current one; outputs will not match the original. Retrain to be exact.",
                UserWarning, stacklevel=2,
            )
