"""Models with adapters of several methods: ``PeftMixedModel`` and ``get_peft_model(..., mixed=True)``.

Mixing is a property of the core, not of this class: every adapter layer follows the
:class:`~peft_core.layer.AdapterLayer` protocol, so any ``PeftModel`` accepts an adapter of
another method whose plugin declares :attr:`~peft_core.registry.Capability.MIXED_METHODS`.
This class exists for Hugging Face PEFT's names and for its one promise: every adapter it
holds can share the model with others (a method that cannot is refused when added, with
the plugin's reason).

**Order of application.** On a module targeted by two methods, the layer of the method
added later wraps the layer of the method added earlier: the outer layer runs the inner one
(which runs the base module and its own adapters) and applies its adapters to that result.
So with LoRA added first and OFT second, a targeted linear computes ``(W + BA)(R x)``; with
OFT first and LoRA second, ``W R x + BA x``. Adapters of the method already present on a
module join its layer wherever it sits in the stack. Merging follows the same order, inner
layers first, so a merged model computes exactly what the unmerged one does.

Unlike PEFT's mixed model, this one trains and saves: ``save_pretrained`` writes each adapter
in the PEFT layout (``default`` in the directory, others in ``<dir>/<name>/``), and
``from_pretrained`` + ``load_adapter`` rebuild the mix, in the order the adapters were added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .config import PeftConfig
from .model import PeftModel, _GenerateMixin
from .plugins import registry
from .registry import Capability


def _require_mixable(config: PeftConfig, operation: str) -> None:
    registry().for_config(config).require(Capability.MIXED_METHODS, operation)


class PeftMixedModel(_GenerateMixin, PeftModel):
    """A model whose adapters may be of different methods, several active at once.

    ``set_adapter(["lora", "loha"])`` activates adapters of several methods together; all of
    ``PeftModel`` works as usual (training, ``disable_adapter``, ``merge_and_unload``,
    ``delete_adapter``, saving).
    """

    def __init__(self, model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default",
                 autocast_adapter_dtype: bool = True, low_cpu_mem_usage: bool = False) -> None:
        _require_mixable(peft_config, "a mixed model (PeftMixedModel)")
        super().__init__(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)

    def add_adapter(self, adapter_name: str, peft_config: PeftConfig, low_cpu_mem_usage: bool = False) -> None:
        """Add an adapter of any mixable method (inactive until ``set_adapter``)."""
        _require_mixable(peft_config, "adding an adapter to a mixed model")
        super().add_adapter(adapter_name, peft_config, low_cpu_mem_usage=low_cpu_mem_usage)

    def set_adapter(self, adapter_name: str | Sequence[str], inference_mode: bool = False) -> None:
        """Activate one adapter or several, of any methods (their effects combine in stacking order)."""
        super().set_adapter(adapter_name, inference_mode=inference_mode)

    def load_adapter(self, model_id: Any, adapter_name: str, *args: Any, **kwargs: Any) -> Any:
        """Load a saved adapter of any mixable method next to the others; the active set stays as it was."""
        from .config import PeftConfig as _Config
        from pathlib import Path

        subfolder = kwargs.get("subfolder")
        path = Path(model_id) / subfolder if subfolder else Path(model_id)
        _require_mixable(_Config.from_pretrained(path), "loading an adapter into a mixed model")
        active = self.active_adapters
        result = super().load_adapter(model_id, adapter_name, *args, **kwargs)
        self.set_adapter(active)  # re-applies which adapters train, as after any change to the mix
        return result
