"""The X-LoRA plugin: registers ``XLORA`` (entry point ``peft_core: xlora``)."""

from __future__ import annotations

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import MethodRegistry

from .config import XLoraConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (X-LoRA's cases for the shared suite)
from .model import XLoraModel

UNSUPPORTED = {
    Capability.MERGE: "each expert is weighted per token by the classifier, so no single weight holds the mixture "
                      "(as in PEFT); merge an expert on its own LoRA model instead",
    Capability.MULTI_ADAPTER: "an X-LoRA model is one classifier over a fixed set of experts; build another "
                              "PeftModel for another mixture",
    Capability.MULTI_ACTIVE: "the experts are always active together; the classifier chooses among them",
    Capability.MIXED_BATCH: "every row goes through the one classifier and its experts",
    Capability.IDENTITY_AT_INIT: "the loaded experts change the output from the start",
    Capability.WEIGHTED_COMBINE: "the experts are mixed per token by the classifier, not by fixed weights",
    Capability.HOTSWAP: "not implemented: load the X-LoRA model again",
    Capability.MIXED_METHODS: "the experts are LoRA adapters managed by the X-LoRA tuner; other methods cannot join",
    Capability.QUANTIZED_BASE: "not verified on quantized bases",
}


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="XLORA",
            config_class=XLoraConfig,
            prefix="internal_xlora_",
            tuner_class=XLoraModel,
            capabilities=frozenset({Capability.DISABLE, Capability.UNLOAD}),
            unsupported=UNSUPPORTED,
            exports={"XLoraModel": XLoraModel},
            description="X-LoRA: a classifier on the hidden states mixes trained LoRA experts per token and layer.",
            paper="https://arxiv.org/abs/2402.07148",
        )
    )
