"""The LoRA-initialisations plugin (entry point ``peft_core: lora_inits``).

Adds no method: it serves ``LoraConfig(init_lora_weights=...)`` values through the LoRA
plugin's extension hooks, exports :class:`LoftQConfig` and ``replace_lora_weights_loftq`` as
``peft_core.<name>``, and implements the core's conversion hook so that
``save_pretrained(..., path_initial_model_for_weight_conversion=...)`` turns a PiSSA/OLoRA
adapter into a plain LoRA for the original base.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from peft_core import hookimpl
from peft_core.errors import ConfigError
from peft_core.weights import EMBEDDING, LINEAR

from .conversion import convert_to_plain_lora
from .inits import olora_init, orthogonal_init, pissa_init, pissa_niter
from .loftq import LoftQConfig, loftq_init, loftq_problems, loftq_settings, replace_lora_weights_loftq

#: ``init_lora_weights`` values served here (``"pissa_niter_"`` is a prefix: ``"pissa_niter_16"``)
INITS = ("pissa", "pissa_niter_", "olora", "orthogonal", "loftq")


def _initialiser(init: str) -> Any:
    if init == "pissa" or init.startswith("pissa_niter_"):
        return pissa_init
    return {"olora": olora_init, "orthogonal": orthogonal_init, "loftq": None}.get(init, False)


@hookimpl
def peft_core_register_methods(registry: Any) -> None:
    registry.add_exports({"LoftQConfig": LoftQConfig, "replace_lora_weights_loftq": replace_lora_weights_loftq})


@hookimpl
def peft_core_lora_extensions() -> dict[str, Any]:
    return {"inits": list(INITS), "fields": ["loftq_config"]}


@hookimpl
def peft_core_lora_init(layer: Any, adapter_name: str, config: Any, init: Any) -> bool | None:
    init_fn = _initialiser(init) if isinstance(init, str) else False
    if init_fn is False:
        return None  # another extension's value
    kind = layer.description.kind
    if kind == EMBEDDING and init != "loftq":
        # PEFT gives embeddings LoRA's own init for these values; a model's outputs must match its
        layer.default_init(adapter_name, True)
        return True
    if kind != LINEAR:
        raise ConfigError(f"init_lora_weights={init!r} initialises linear layers only (as in PEFT); this layer is a "
                          f"{kind}. Narrow target_modules to linear layers or use init_lora_weights=True.")
    if init_fn is None:
        loftq_init(layer, adapter_name, config)
    else:
        init_fn(layer, adapter_name, init)
    return True


def _ranks(config: Any) -> list[int]:
    return [config.r, *(config.rank_pattern or {}).values()]


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    if getattr(config, "peft_type", None) != "LORA":
        return None
    init = config.init_lora_weights
    problems: list[str] = []
    if isinstance(init, str) and init.startswith("pissa"):
        try:
            pissa_niter(init)
        except ConfigError as exc:
            problems.append(str(exc))
    if init == "orthogonal" and any(r % 2 for r in _ranks(config)):
        problems.append(f"init_lora_weights='orthogonal' needs even ranks, got r={config.r} and "
                        f"rank_pattern={config.rank_pattern}")
    if init == "loftq":
        if not config.loftq_config:
            problems.append("init_lora_weights='loftq' needs loftq_config, e.g. loftq_config=LoftQConfig(loftq_bits=4)")
        else:
            problems.extend(loftq_problems(loftq_settings(config.loftq_config)))
            config.loftq_config = loftq_settings(config.loftq_config)  # saved as the plain dict PEFT writes
    elif config.loftq_config:
        # PEFT drops it with a warning (so its saved configs never carry one); a typo'd init should not go unnoticed
        problems.append(f"loftq_config is set but init_lora_weights={init!r}; set init_lora_weights='loftq' to use "
                        "LoftQ, or drop loftq_config")
    return problems


@hookimpl
def peft_core_convert_for_initial_model(spec: Any, config: Any, adapter_name: str, model: nn.Module,
                                        state_dict: dict, initial_dir: str) -> Any:
    if spec.name != "LORA":
        return None
    init = config.init_lora_weights
    if not (init is True or (isinstance(init, str) and (init.startswith("pissa") or init in ("olora", "corda", "lora_ga")))):
        warnings.warn(f"path_initial_model_for_weight_conversion is meant for PiSSA/OLoRA adapters; this one has "
                      f"init_lora_weights={init!r}, whose base was not changed, so the conversion only doubles its rank.",
                      UserWarning, stacklevel=2)
    return convert_to_plain_lora(config, state_dict, initial_dir)
