"""The LN tuning plugin: registers ``LN_TUNING`` (entry point ``peft_core: ln_tuning``)."""

from __future__ import annotations

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import MethodRegistry

from .config import LNTuningConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation registered with this module)
from .layer import create_ln_tuning_layer
from .model import LNTuningModel

CAPABILITIES = frozenset({
    Capability.MERGE,  # the trained copy is swapped in; unmerge swaps the original back
    Capability.UNLOAD,
    Capability.DISABLE,
    Capability.MULTI_ADAPTER,
    Capability.MIXED_BATCH,  # a norm works row by row: each row runs its own adapter's copy
    Capability.IDENTITY_AT_INIT,  # a fresh copy computes what the original does
})


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="LN_TUNING",
            config_class=LNTuningConfig,
            prefix="ln_tuning_",
            layer_factory=create_ln_tuning_layer,
            capabilities=CAPABILITIES,
            unsupported={
                Capability.MULTI_ACTIVE: "each adapter is a replacement copy of the module, and one module can only be "
                                         "replaced by one copy at a time; activate one adapter (or use a mixed batch)",
                Capability.WEIGHTED_COMBINE: "LN tuning adapters are module copies, not changes that can be weighted "
                                             "and summed",
                Capability.HOTSWAP: "not implemented for LN tuning; load the adapter with load_adapter and set_adapter",
                Capability.QUANTIZED_BASE: "normalisation layers are not quantized, and copying a quantized layer to "
                                           "train it is not supported",
                Capability.MIXED_METHODS: "LN tuning adapters are not tested next to other methods' adapters",
            },
            exports={"LNTuningModel": LNTuningModel},
            description="LayerNorm tuning: a trained copy of each normalisation layer replaces the frozen original.",
            paper="https://arxiv.org/abs/2312.11420",
        )
    )
