"""The block-diagonal LoRA plugin (entry point ``peft_core: lora_bd``): serves ``LoraConfig.use_bdlora``.

Adds no method (on disk it is ``peft_type: "LORA"`` with a ``use_bdlora`` object and the
usual factor keys); it implements the LoRA plugin's variant and extension hooks.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_core import hookimpl
from peft_core.errors import ConfigError
from peft_core.registry import MethodRegistry
from peft_core.weights import LINEAR

from .config import BdLoraConfig, as_bdlora_config
from .variant import BdLoraVariant

FIELD = "use_bdlora"


@hookimpl
def peft_core_register_methods(registry: MethodRegistry) -> None:
    registry.add_exports({"BdLoraConfig": BdLoraConfig})


@hookimpl(optionalhook=True)  # a LoRA hook: the plugin still loads when LoRA is disabled
def peft_core_lora_extensions() -> dict[str, Any]:
    return {"fields": [FIELD]}


@hookimpl(optionalhook=True)  # a LoRA hook: the plugin still loads when LoRA is disabled
def peft_core_lora_variant(config: Any, layer_kind: str) -> BdLoraVariant | None:
    # PEFT has block-diagonal factors for linear layers only; its embeddings and convolutions stay plain LoRA
    if getattr(config, FIELD, None) is None or layer_kind != LINEAR:
        return None
    return BdLoraVariant()


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    value = getattr(config, FIELD, None)
    if value is None or getattr(config, "peft_type", None) != "LORA":
        return None
    try:
        config.use_bdlora = as_bdlora_config(value)
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    if getattr(config, "use_dora", False):
        problems.append("use_bdlora and use_dora are two LoRA variants; an adapter can use one of them")
    if getattr(config, "lora_bias", False):
        problems.append("lora_bias=True is not available with use_bdlora (a block-diagonal factor has no bias); "
                        "set lora_bias=False")
    return problems
