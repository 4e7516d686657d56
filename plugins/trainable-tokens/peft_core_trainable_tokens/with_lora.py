"""``LoraConfig.trainable_token_indices``: a LoRA adapter that also trains selected embedding rows.

Implements the LoRA plugin's extension hooks: the field is declared served, and when a LoRA
adapter asking for it is injected its embeddings get trainable tokens layers holding the
same adapter name (so the adapter is activated, merged, saved and deleted as one).

On disk PEFT keeps these rows under the wrapper it puts around the embedding,
``<embedding>.token_adapter.trainable_tokens_delta``, and saves a tied head's rows only once
(under the embedding). The save/load hooks map between that layout and the layers here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_core import hookimpl
from peft_core.errors import ConfigError

from .config import check_token_indices
from .injection import add_tokens, resolve_token_targets, tie_heads, token_layers

FIELD = "trainable_token_indices"
DELTA = "trainable_tokens_delta"
WRAPPED_DELTA = f"token_adapter.{DELTA}"
PREFIX = "base_model.model."


def _asks_for_tokens(spec: Any, config: Any) -> bool:
    return getattr(spec, "name", None) == "LORA" and getattr(config, FIELD, None) is not None


@hookimpl(optionalhook=True)  # a LoRA hook: the plugin still loads when LoRA is disabled
def peft_core_lora_extensions() -> dict[str, Any]:
    return {"fields": [FIELD]}


@hookimpl
def peft_core_validate_config(config: Any, model: nn.Module) -> list[str] | None:
    indices = getattr(config, FIELD, None)
    if getattr(config, "peft_type", None) != "LORA" or indices is None:
        return None
    problems = []
    groups = indices.items() if isinstance(indices, dict) else [("trainable_token_indices", indices)]
    for key, ids in groups:
        try:
            check_token_indices(ids, f"trainable_token_indices[{key!r}]" if isinstance(indices, dict) else key)
        except ConfigError as exc:  # collected with the other problems
            problems.append(str(exc))
    saved_fully = set(getattr(config, "modules_to_save", None) or ())
    for key in (indices if isinstance(indices, dict) else {}):
        if key in saved_fully:
            problems.append(f"{key!r} is in modules_to_save (trained fully) and in trainable_token_indices; "
                            "pick one of the two for it")
    return problems


@hookimpl(optionalhook=True)  # a LoRA hook: the plugin still loads when LoRA is disabled
def peft_core_lora_adapter_injected(tuner: Any, config: Any, adapter_name: str) -> None:
    indices = getattr(config, FIELD, None)
    if indices is None:
        return
    targets = resolve_token_targets(tuner.model, indices)
    dtype = _factor_dtype(tuner, adapter_name)
    for name, ids in targets.items():
        rows = add_tokens(tuner, name, adapter_name, config, ids).trainable_tokens_delta[adapter_name]
        if dtype is not None:
            rows.data = rows.data.to(dtype)
    # a tied head named with the embedding's own indices is tied to it (PEFT does not wrap it separately)
    getter = getattr(tuner.model, "get_input_embeddings", None)
    embedding = getter() if getter is not None else None
    embedding_name = next((name for name, layer in token_layers(tuner.model) if layer is embedding), None)
    own = [name for name, ids in targets.items() if name != embedding_name and ids != targets.get(embedding_name)]
    tie_heads(tuner, skip=own)


def _factor_dtype(tuner: Any, adapter_name: str) -> torch.dtype | None:
    """The dtype the adapter's LoRA factors were given (fp32 over a half-precision base with autocast_adapter_dtype).

    The trained rows take it too, so one adapter's tensors share one precision, whichever
    ``autocast_adapter_dtype`` the adapter was injected with.
    """
    from peft_core_lora.layer import LoraLayer

    for _, layer in tuner.adapter_layers():
        if isinstance(layer, LoraLayer) and layer.has_adapter(adapter_name):
            tensors = layer.adapter_parameters(adapter_name)
            if tensors:
                return tensors[0].dtype
    return None


def _paths(model: nn.Module) -> tuple[dict[str, str], list[str]]:
    """``(tied head path -> embedding path, every token layer path)`` in the model."""
    layers = list(token_layers(model))
    where = {id(layer): name for name, layer in layers}
    tied = {name: where[id(layer.tied_to)] for name, layer in layers if layer.tied_to is not None and id(layer.tied_to) in where}
    return tied, [name for name, _ in layers]


@hookimpl
def peft_core_state_dict_pre_save(spec: Any, config: Any, adapter_name: str, model: nn.Module,
                                  state_dict: dict[str, torch.Tensor]) -> None:
    if not _asks_for_tokens(spec, config):
        return
    tied, names = _paths(model)
    for name in names:
        key = f"{PREFIX}{name}.{DELTA}"
        if key not in state_dict:
            continue
        value = state_dict.pop(key)
        if name not in tied:  # a tied head's rows are the embedding's: saved once
            state_dict[f"{PREFIX}{name}.{WRAPPED_DELTA}"] = value


@hookimpl
def peft_core_state_dict_post_load(spec: Any, config: Any, adapter_name: str, model: nn.Module,
                                   state_dict: dict[str, torch.Tensor]) -> None:
    if not _asks_for_tokens(spec, config):
        return
    for key in [k for k in state_dict if k.endswith(f".{WRAPPED_DELTA}")]:
        state_dict[key[: -len(WRAPPED_DELTA)] + DELTA] = state_dict.pop(key)
    tied, _ = _paths(model)
    for head, embedding in tied.items():
        rows = state_dict.get(f"{PREFIX}{embedding}.{DELTA}")
        if rows is not None:
            state_dict[f"{PREFIX}{head}.{DELTA}"] = rows
