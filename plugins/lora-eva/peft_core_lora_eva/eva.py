"""EVA: LoRA's ``A`` from the principal directions of each adapted layer's inputs.

:func:`get_eva_state_dict` runs calibration batches through the model (adapters disabled)
and fits an incremental PCA per adapted linear layer until the components it needs stop
moving (cosine similarity ``>= tau`` between consecutive batches). Ranks are then shared
out across layers by explained variance: the sum of the configured ranks is the budget,
and a layer may take up to ``round(r · rho)`` of it. :func:`initialize_lora_eva_weights`
writes the components into ``lora_A`` (``B`` stays zero, so the model is unchanged),
resizes adapters whose rank changed, drops adapters that got rank 0, and records the new
ranks in the config's ``rank_pattern`` so the adapter saves and loads like PEFT's.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from itertools import cycle
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from peft_core.errors import ConfigError
from peft_core.layer import AdapterLayer
from peft_core.targeting import TargetMatcher, pattern_value, walk_modules
from peft_core.weights import LINEAR, describe_layer

from .collect import (
    FingerprintHook,
    PCAHook,
    forward_fn_dict,
    prepare_layer_inputs_fn_language_modeling,
    prepare_model_inputs_fn_language_modeling,
)
from .config import EvaConfig

#: rho above this is capped at (largest parameter dimension) // r, as in PEFT
RHO_LIMIT = 1000
#: from this many kept layers on, target_modules is shortened to distinguishing suffixes
MIN_TARGETS_TO_SHORTEN = 20
PEFT_MODEL_PREFIX = "base_model.model."


def eva_settings(config: Any) -> EvaConfig:
    """The config's ``eva_config`` as an :class:`EvaConfig` (defaults, with a warning, when unset)."""
    if config.eva_config is None:
        warnings.warn("init_lora_weights='eva' without eva_config; using EvaConfig() defaults.", UserWarning, stacklevel=3)
        config.eva_config = EvaConfig()
    config.eva_config = EvaConfig.coerce(config.eva_config)
    return config.eva_config


def _is_eva_layer(module: nn.Module) -> bool:
    """A LoRA layer over a linear base: what EVA initialises (embeddings and convolutions are left alone)."""
    return isinstance(module, AdapterLayer) and module.method == "LORA" and module.description.kind == LINEAR


def _plain_targets(model: nn.Module, config: Any) -> Iterable[str]:
    """Linear layers (incl. GPT-2's Conv1D) of a model without adapters that ``config`` targets."""
    matcher = TargetMatcher(config, model)
    for name, module in walk_modules(model):
        if not name:
            continue
        desc = describe_layer(module)
        if desc is None or desc.kind != LINEAR:
            continue
        if config.target_modules is None or (matcher.targeted(name, module) and not matcher.excluded(name)):
            yield name


def _model_device(model: nn.Module) -> torch.device | None:
    devices = {p.device for p in model.parameters() if p.device.type != "meta"}
    return next(iter(devices)) if len(devices) == 1 else None


def _to_device(inputs: Any, device: torch.device | None) -> Any:
    if device is None:
        return inputs
    if hasattr(inputs, "to"):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return type(inputs)({k: _to_device(v, device) for k, v in inputs.items()})
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to_device(v, device) for v in inputs)
    return inputs


def _distribute_ranks(hooks: Mapping[str, PCAHook], layer_hook: Mapping[str, str], twins: Mapping[str, str],
                      budget: int, max_components: Mapping[str, int]) -> dict[str, int]:
    """Give the ``budget`` ranks to the components with the largest explained-variance ratios.

    Every layer offers its hook's first ``max_components`` ratios; a layer's rank is how many
    of its offers are among the ``budget`` largest. Layers sharing an input (``twins``) offer
    the same ratios; the one that owns the PCA must get the largest rank of its group.
    """
    offers = [(layer, ratio) for layer, hook_name in layer_hook.items()
              for ratio in hooks[hook_name].pca.explained_variance_ratio_[: max_components[layer]]]
    layers, ratios = zip(*offers)
    order = torch.stack(list(ratios)).argsort(descending=True)  # the tie order PEFT gets from the same call
    counts = Counter(layers[i] for i in order[:budget].tolist())
    ranks = {layer: counts.get(layer, 0) for layer in layer_hook}
    for layer, owner in twins.items():
        if ranks[owner] < ranks[layer]:
            ranks[owner], ranks[layer] = ranks[layer], ranks[owner]
    return ranks


def _eva_state_dict(model: nn.Module, dataloader: Iterable, config: Any, targets: list[str], forward_fn: Callable | None,
                    prepare_model_inputs_fn: Callable | None, prepare_layer_inputs_fn: Any, gather: bool,
                    show_progress_bar: bool) -> dict[str, torch.Tensor]:
    eva = eva_settings(config)
    if not len(dataloader):  # type: ignore[arg-type]
        raise ConfigError("the EVA dataloader is empty; give it at least one calibration batch.")
    if not targets:
        raise ConfigError("EVA found no adapted linear layers in this model; check target_modules.")
    forward_fn = forward_fn or forward_fn_dict
    rho = eva.rho
    if rho > RHO_LIMIT:
        rho = min(rho, max(max(p.shape) for p in model.parameters()) // config.r)
    per_layer = dict(prepare_layer_inputs_fn) if isinstance(prepare_layer_inputs_fn, Mapping) else None
    if per_layer is not None:
        unknown = sorted(set(per_layer) - set(targets))
        if unknown:
            raise ConfigError(f"prepare_layer_inputs_fn names modules that are not EVA targets: {unknown}.")

    def prepared(batch: Any) -> Any:
        return prepare_model_inputs_fn(batch, config) if prepare_model_inputs_fn is not None else copy.deepcopy(batch)

    device = _model_device(model)
    ranks = {name: pattern_value(config.rank_pattern or {}, _strip(name), config.r) for name in targets}
    max_components = {name: round(r * rho) for name, r in ranks.items()}
    budget = sum(ranks.values())
    handles: dict[str, Any] = {}
    try:
        # one forward to find layers fed the very same tensor (q/k/v projections): they share one PCA
        first = _to_device(next(iter(dataloader)), device)
        fingerprints: dict[str, FingerprintHook] = {}
        for name in targets:
            fn = per_layer.get(name) if per_layer is not None else prepare_layer_inputs_fn
            fingerprints[name] = FingerprintHook(name, fn, gather)
            fingerprints[name].model_input = prepared(first)
            handles[name] = model.get_submodule(name).register_forward_hook(fingerprints[name])
        forward_fn(model, first)
        for handle in handles.values():
            handle.remove()
        handles.clear()
        groups: dict[str | None, list[str]] = {}
        for name in targets:
            groups.setdefault(fingerprints[name].fingerprint, []).append(name)
        twins = {other: group[0] for group in groups.values() for other in group[1:]}
        for group in groups.values():
            widest = max(max_components[n] for n in group)
            for n in group:
                max_components[n] = widest
        hooks = {name: PCAHook(name, fingerprints[name].prepare_fn, gather, max_components[name], eva.tau)
                 for name in targets if name not in twins}
        for name, hook in hooks.items():
            handles[name] = model.get_submodule(name).register_forward_hook(hook)
        layer_hook = {name: twins.get(name, name) for name in targets}
        ranks_now = dict(max_components)
        done = dict.fromkeys(hooks, False)
        batches = tqdm(cycle(dataloader), leave=False, disable=not show_progress_bar or _not_rank_zero())
        for batch in batches:
            batch = _to_device(batch, device)
            model_input = prepared(batch)
            for name, hook in hooks.items():
                converged = bool(hook.converged[: ranks_now[name]].all())
                if converged and not done[name]:
                    handles.pop(name).remove()  # stop feeding a layer whose needed components settled
                    done[name] = True
                    continue
                if done[name] and not converged:  # a redistribution asks it for more components
                    handles[name] = model.get_submodule(name).register_forward_hook(hook)
                    done[name] = False
                hook.model_input = model_input
            settled = sum(done[layer_hook[n]] for n in targets)
            batches.set_description(f"{settled}/{len(targets)} layers have converged")
            if all(done.values()):
                break
            forward_fn(model, batch)
            if all(h.pca.fitted for h in hooks.values()):
                ranks_now = _distribute_ranks(hooks, layer_hook, twins, budget, max_components)
    finally:
        for handle in handles.values():
            handle.remove()
    state: dict[str, torch.Tensor] = {}
    for name, rank in ranks_now.items():
        hook = hooks[layer_hook[name]]
        components = hook.pca.components_[:rank]
        if eva.whiten:
            components = components / hook.pca.singular_values_[:rank].sqrt().unsqueeze(1)
        state[name] = components.to(torch.float32) if device is None else components.to(device, torch.float32)
    return state


def _not_rank_zero() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def _strip(name: str) -> str:
    return name[len(PEFT_MODEL_PREFIX):] if name.startswith(PEFT_MODEL_PREFIX) else name


@torch.no_grad()
def get_eva_state_dict(
    model: nn.Module,
    dataloader: Iterable,
    peft_config: Any = None,
    forward_fn: Callable | None = forward_fn_dict,
    prepare_model_inputs_fn: Callable | None = prepare_model_inputs_fn_language_modeling,
    prepare_layer_inputs_fn: Callable | Mapping[str, Callable] | None = prepare_layer_inputs_fn_language_modeling,
    adapter_name: str = "default",
    gather_distributed_inputs: bool = True,
    show_progress_bar: bool = True,
) -> dict[str, torch.Tensor]:
    """EVA's ``lora_A`` for every adapted linear layer: ``{module name: (rank, in_features)}``.

    ``model`` is a ``PeftModel`` (its ``adapter_name`` config is used and its adapters are
    disabled while calibrating; names are the ``PeftModel``'s module names) or a plain model
    with ``peft_config``. ``forward_fn(model, batch)`` runs one batch;
    ``prepare_model_inputs_fn(batch, peft_config)`` turns a batch into what
    ``prepare_layer_inputs_fn(layer_input, model_input, layer_name)`` needs to return the 2-d
    rows of a layer's input (a dict of per-module functions is accepted). The defaults keep
    the unpadded, labelled tokens of a language-model batch. Rank 0 gives an empty tensor.
    """
    is_peft = hasattr(model, "peft_config")
    if peft_config is None:
        if not is_peft:
            raise ConfigError("get_eva_state_dict needs peft_config (a LoraConfig) when the model is not a PeftModel.")
        peft_config = model.peft_config[adapter_name]
    if is_peft:
        targets = [n for n, m in model.named_modules() if _is_eva_layer(m) and m.has_adapter(adapter_name)]
        context = model.disable_adapter()
    else:
        targets = list(_plain_targets(model, peft_config))
        context = nullcontext()
    was_training = model.training
    model.eval()
    try:
        with context:
            return _eva_state_dict(model, dataloader, peft_config, targets, forward_fn, prepare_model_inputs_fn,
                                   prepare_layer_inputs_fn, gather_distributed_inputs, show_progress_bar)
    finally:
        model.train(was_training)


@torch.no_grad()
def initialize_lora_eva_weights(
    model: nn.Module,
    dataloader: Iterable | None = None,
    eva_state_dict: dict[str, torch.Tensor] | None = None,
    forward_fn: Callable | None = forward_fn_dict,
    prepare_model_inputs_fn: Callable | None = prepare_model_inputs_fn_language_modeling,
    prepare_layer_inputs_fn: Callable | Mapping[str, Callable] | None = prepare_layer_inputs_fn_language_modeling,
    adapter_name: str = "default",
    gather_distributed_inputs: bool = True,
    show_progress_bar: bool = True,
) -> nn.Module:
    """Give the EVA adapter ``adapter_name`` of a ``PeftModel`` its data-driven ``lora_A`` and ranks.

    Computes the EVA state dict from ``dataloader`` (see :func:`get_eva_state_dict`) unless
    ``eva_state_dict`` is given, then loads it: the model's outputs do not change (``B`` is
    zero) and its config's ``rank_pattern``/``alpha_pattern``/``target_modules`` describe
    the new ranks, so ``save_pretrained`` writes what PEFT writes. Returns ``model``.
    """
    if not hasattr(model, "peft_config"):
        raise ConfigError("initialize_lora_eva_weights takes a PeftModel: call get_peft_model(model, "
                          "LoraConfig(init_lora_weights='eva', ...)) first.")
    if len(model.active_adapters) > 1:
        raise ConfigError("initialize_lora_eva_weights works with one active adapter; set_adapter() to one first.")
    config = model.peft_config.get(adapter_name)
    if config is None or getattr(config, "init_lora_weights", None) != "eva":
        raise ConfigError(f"adapter {adapter_name!r} was not created with init_lora_weights='eva'; "
                          "EVA initialisation only applies to such adapters.")
    if eva_state_dict is None:
        if dataloader is None:
            raise ConfigError("initialize_lora_eva_weights needs a dataloader of calibration batches or an eva_state_dict.")
        eva_state_dict = get_eva_state_dict(model, dataloader, None, forward_fn, prepare_model_inputs_fn,
                                            prepare_layer_inputs_fn, adapter_name, gather_distributed_inputs,
                                            show_progress_bar)
    from .load import load_eva_state_dict

    load_eva_state_dict(model, dict(eva_state_dict), adapter_name)
    return model
