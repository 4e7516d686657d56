"""The AdaMSS plugin: registers ``ADAMSS`` (entry point ``peft_core: adamss``)."""

from __future__ import annotations

from peft_core import Capability, MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES, MethodRegistry
from peft_core.tuner import AdapterModel

from .allocation import update_and_allocate
from .config import AdamssConfig
from .conformance import peft_core_conformance_cases  # noqa: F401  (AdaMSS's cases for the shared suite)
from .layer import create_adamss_layer


class AdamssModel(AdapterModel):
    """The generic tuner under PEFT's name; ``model.base_model`` of any AdaMSS model has the same methods."""

    def update_and_allocate(self, global_step: int) -> None:
        """Adaptive subspace allocation step; call after ``backward()``/``optimizer.step()``, before ``zero_grad()``."""
        update_and_allocate(self, global_step)


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.register(
        MethodSpec(
            name="ADAMSS",
            config_class=AdamssConfig,
            prefix="adamss_",
            layer_factory=create_adamss_layer,
            capabilities=LAYER_METHOD_CAPABILITIES,
            unsupported={
                Capability.WEIGHTED_COMBINE: "each adapter's subspaces come from its own clustering; summing factors "
                "of different subspaces has no meaning (PEFT has no add_weighted_adapter for AdaMSS)",
                Capability.HOTSWAP: "not implemented for AdaMSS",
                Capability.QUANTIZED_BASE: "the SVD needs the full-precision base weight; untested on quantized bases",
                Capability.MIXED_METHODS: "not tested together with other methods' layers",
            },
            exports={"AdamssModel": AdamssModel},
            tuner_methods={"update_and_allocate": update_and_allocate},
            description="AdaMSS: low-rank updates in KMeans-clustered subspaces of the weight's singular vectors, "
                        "with adaptive subspace allocation during training.",
            paper="https://neurips.cc/virtual/2025/loc/san-diego/poster/119606",
        )
    )
