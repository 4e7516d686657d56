"""Putting trainable tokens layers into a model: by name, and onto heads tied to the embedding.

Used by the standalone method (after its embedding layers are injected, tied heads are
wrapped too) and by LoRA's ``trainable_token_indices`` (the embeddings are wrapped when the
LoRA adapter is injected). Either way a head whose weight *is* the input embedding's weight
gets a layer tied to the embedding's, so both use one set of trained rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from peft_core.errors import ConfigError, TargetModulesError
from peft_core.layer import AdapterLayer, base_of
from peft_core.targeting import walk_modules
from peft_core.weights import require_description

from .layer import TrainableTokensLayer

KINDS = ("embedding", "linear")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def token_layers(model: nn.Module) -> Iterator[tuple[str, TrainableTokensLayer]]:
    for name, module in walk_modules(model):
        if isinstance(module, TrainableTokensLayer):
            yield name, module


def add_tokens(tuner: Any, name: str, adapter_name: str, config: Any, token_indices: Sequence[int],
               init_weights: bool = True) -> TrainableTokensLayer:
    """Give ``adapter_name`` trainable rows ``token_indices`` of the module at ``name`` (wrapping it if needed)."""
    model = tuner.model
    module = model.get_submodule(name)
    if isinstance(module, TrainableTokensLayer):
        module.update_layer(adapter_name, config, token_indices=token_indices, init_weights=init_weights)
        return module
    if isinstance(module, AdapterLayer):
        raise ConfigError(f"{name!r} already holds a {module.method} layer; trainable tokens cannot share a module "
                          "with another method's adapter: leave it out of target_modules or of the token targets.")
    desc = require_description(base_of(module), name, "TRAINABLE_TOKENS", KINDS)
    layer = TrainableTokensLayer(module, desc)
    layer.update_layer(adapter_name, config, token_indices=token_indices, init_weights=init_weights)
    _set_module(model, name, layer)
    tuner._layers_cache = None
    return layer


def _tied_names(model: nn.Module, embedding: nn.Module) -> list[str]:
    """Modules other than ``embedding`` that compute with the very same weight tensor (a tied LM head)."""
    weight = base_of(embedding).weight
    return [name for name, module in walk_modules(model)
            if name and module is not embedding and getattr(base_of(module), "weight", None) is weight]


def tie_heads(tuner: Any, skip: Sequence[str] = ()) -> list[str]:
    """Tie a trainable tokens layer to every head sharing the input embedding's weight; return their names.

    Only with ``tie_word_embeddings`` in the model config, as in PEFT. A head that already has
    its own trainable tokens layer is replaced by a tied one unless it is named in ``skip``
    (LoRA's ``trainable_token_indices`` gave it indices of its own).
    """
    model = tuner.model
    config = getattr(model, "config", None)
    getter = getattr(model, "get_input_embeddings", None)
    if not getattr(config, "tie_word_embeddings", False) or getter is None:
        return []
    embedding = getter()
    if not isinstance(embedding, TrainableTokensLayer):
        return []
    tied = []
    for name in _tied_names(model, embedding):
        if any(name == s or name.endswith(f".{s}") for s in skip):
            continue
        module = model.get_submodule(name)
        if isinstance(module, TrainableTokensLayer):
            if module.tied_to is embedding:
                continue
            module = module.base_layer
        elif isinstance(module, AdapterLayer):
            raise ConfigError(f"{name!r} is tied to the input embedding but holds a {module.method} layer; trainable "
                              "tokens would bypass it. Leave the tied head out of target_modules.")
        desc = require_description(base_of(module), name, "TRAINABLE_TOKENS", KINDS)
        _set_module(model, name, TrainableTokensLayer(module, desc, tied_to=embedding))
        tied.append(name)
    tuner._layers_cache = None
    return tied


def resolve_token_targets(model: nn.Module, indices: Any) -> dict[str, list[int]]:
    """``LoraConfig.trainable_token_indices`` as ``{module path: token ids}``; a clear error for names that match nothing."""
    from .config import input_embeddings_name

    if not isinstance(indices, dict):
        return {input_embeddings_name(model): list(indices)}
    names = [name for name, _ in walk_modules(model) if name]
    resolved: dict[str, list[int]] = {}
    for key, ids in indices.items():
        found = [n for n in names if n == key or n.endswith(f".{key}")]
        if not found:
            raise TargetModulesError(f"trainable_token_indices names {key!r}, but no module of the model is called "
                                     "that; use the embedding's name (e.g. 'embed_tokens').")
        resolved.update(dict.fromkeys(found, list(ids)))
    return resolved

