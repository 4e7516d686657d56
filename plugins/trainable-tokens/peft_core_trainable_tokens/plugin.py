"""The trainable tokens plugin (entry point ``peft_core: trainable_tokens``).

Registers ``TRAINABLE_TOKENS`` and serves ``LoraConfig.trainable_token_indices`` through the
LoRA plugin's extension hooks (:mod:`.with_lora`).
"""

from __future__ import annotations

from typing import Any

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import MethodRegistry

from .config import TrainableTokensConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .injection import tie_heads
from .layer import create_trainable_tokens_layer
from .model import TrainableTokensModel
from .with_lora import (  # noqa: F401  (hook implementations registered with this module)
    peft_core_lora_adapter_injected,
    peft_core_lora_extensions,
    peft_core_state_dict_post_load,
    peft_core_state_dict_pre_save,
    peft_core_validate_config,
)

CAPABILITIES = frozenset({
    Capability.MERGE,  # the trained rows are written into the weight; unmerge writes the original rows back
    Capability.UNLOAD,
    Capability.DISABLE,
    Capability.MULTI_ADAPTER,
    Capability.MULTI_ACTIVE,  # adapters with disjoint token_indices; overlapping ones are refused
    Capability.MIXED_BATCH,
    Capability.IDENTITY_AT_INIT,  # init_weights=True copies the current rows
})


def _tie_heads(tuner: Any, config: TrainableTokensConfig, adapter_name: str) -> None:
    tie_heads(tuner)


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="TRAINABLE_TOKENS",
            config_class=TrainableTokensConfig,
            prefix="trainable_tokens_",
            layer_factory=create_trainable_tokens_layer,
            capabilities=CAPABILITIES,
            unsupported={
                Capability.WEIGHTED_COMBINE: "an adapter's rows replace the base rows; replacements cannot be "
                                             "weighted and summed",
                Capability.HOTSWAP: "not implemented for trainable tokens; load the adapter with load_adapter and "
                                    "set_adapter",
                Capability.QUANTIZED_BASE: "embedding matrices are not quantized by the supported backends",
                Capability.MIXED_METHODS: "use LoraConfig(trainable_token_indices=...) to train tokens next to LoRA, "
                                          "as PEFT does",
            },
            init_shared=_tie_heads,
            exports={"TrainableTokensModel": TrainableTokensModel},
            description="Trainable tokens: only the embedding rows of selected tokens are trained.",
            paper="https://huggingface.co/docs/peft/package_reference/trainable_tokens",
        )
    )
