"""The EVA plugin (entry point ``peft_core: lora_eva``): serves ``init_lora_weights="eva"`` and ``eva_config``.

It adds no method: at ``get_peft_model`` time an EVA adapter is plain LoRA with ``B = 0``
(so the model is unchanged); :func:`initialize_lora_eva_weights` then fits it to data.
``EvaConfig``, ``initialize_lora_eva_weights`` and ``get_eva_state_dict`` are exported as
``peft_core.<name>``.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from peft_core import hookimpl
from peft_core.errors import ConfigError
from peft_core.weights import EMBEDDING, LINEAR

from .config import EvaConfig
from .eva import get_eva_state_dict, initialize_lora_eva_weights


@hookimpl
def peft_core_register_methods(registry: Any) -> None:
    registry.add_exports({"EvaConfig": EvaConfig, "initialize_lora_eva_weights": initialize_lora_eva_weights,
                          "get_eva_state_dict": get_eva_state_dict})


@hookimpl
def peft_core_lora_extensions() -> dict[str, Any]:
    return {"inits": ["eva"], "fields": ["eva_config"]}


@hookimpl
def peft_core_lora_init(layer: Any, adapter_name: str, config: Any, init: Any) -> bool | None:
    if init != "eva":
        return None
    kind = layer.description.kind
    if kind == LINEAR:
        # A keeps its creation-time (Kaiming) values until initialize_lora_eva_weights replaces them
        layer.lora_B[adapter_name].weight.data.zero_()
    elif kind == EMBEDDING:
        layer.default_init(adapter_name, True)  # EVA leaves embeddings to LoRA's own init, as PEFT does
    else:
        raise ConfigError(f"init_lora_weights='eva' does not apply to {kind} layers (as in PEFT); narrow "
                          "target_modules to linear (and embedding) layers.")
    return True


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    if getattr(config, "peft_type", None) != "LORA":
        return None
    if config.init_lora_weights != "eva":
        if config.eva_config is not None:
            warnings.warn("eva_config is ignored: init_lora_weights is not 'eva'.", UserWarning, stacklevel=2)
        return None
    problems = []
    try:
        if config.eva_config is None:
            warnings.warn("init_lora_weights='eva' without eva_config; using EvaConfig() defaults.", UserWarning,
                          stacklevel=2)
            config.eva_config = EvaConfig()
        config.eva_config = EvaConfig.coerce(config.eva_config)
    except ConfigError as exc:
        problems.append(str(exc))
    if config.lora_bias:
        problems.append("lora_bias=True works with init_lora_weights=True or False only (as in PEFT), not 'eva'")
    return problems
