"""AdaMSS for peft-core: config, layer, adaptive subspace allocation and the plugin that registers them."""

from typing import Any

from .allocation import update_and_allocate
from .config import AdamssConfig
from .layer import AdamssLayer
from .plugin import AdamssModel

__all__ = ["AdamssAsaCallback", "AdamssConfig", "AdamssLayer", "AdamssModel", "update_and_allocate"]


def __getattr__(name: str) -> Any:
    if name == "AdamssAsaCallback":  # imports transformers: only when asked
        from .callback import AdamssAsaCallback

        return AdamssAsaCallback
    raise AttributeError(f"module 'peft_core_adamss' has no attribute {name!r}")
