"""The DoRA plugin (entry point ``peft_core: dora``): serves ``LoraConfig(use_dora=True)``.

DoRA adds no method of its own (on disk it is ``peft_type: "LORA"`` with
``use_dora: true`` and one ``lora_magnitude_vector`` per adapted layer); it implements the
variant hooks the LoRA plugin declares.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_core import hookimpl
from peft_core.weights import CONV, EMBEDDING, LINEAR

from .variant import DoraVariant

DISTRIBUTION = "peft-core-dora"
KINDS = (LINEAR, EMBEDDING, CONV)


@hookimpl
def peft_core_lora_variant(config: Any, layer_kind: str) -> DoraVariant | None:
    if not getattr(config, "use_dora", False):
        return None
    if layer_kind not in KINDS:  # pragma: no cover - LoRA only builds these kinds
        return None
    return DoraVariant(layer_kind)


@hookimpl
def peft_core_lora_variant_flags() -> dict[str, str]:
    return {"use_dora": DISTRIBUTION}


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    if not getattr(config, "use_dora", False) or getattr(config, "peft_type", None) != "LORA":
        return None
    problems = []
    if getattr(config, "lora_bias", False):
        problems.append("lora_bias=True is not supported with use_dora=True (as in Hugging Face PEFT); "
                        "set one of them to False")
    return problems
