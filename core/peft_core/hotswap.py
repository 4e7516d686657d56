"""Hot-swapping: replace a loaded adapter's weights in place, without touching the module tree.

Why in place: a ``torch.compile``d model's graphs hold on to the adapter's parameter
objects and guard on their shapes and on Python numbers they read. Loading a second
adapter and switching to it would create new modules (and recompile); copying the new
tensors *into* the existing ones keeps every graph valid. Two things can still force a
recompile — a different rank (tensor shapes) and a different scale (a Python float) — and
:func:`prepare_model_for_compiled_hotswap` removes both before compiling: it pads every
adapter to ``target_rank`` with zero rows/columns (which leave outputs unchanged) and turns
per-adapter numbers into tensors that a swap rewrites with ``fill_``.

The core does the method-independent work — reading the checkpoint, matching keys, checking
everything before writing anything, copying (zero-padded) tensors. What only a method knows
comes from its :class:`HotswapSupport`, returned by the ``peft_core_hotswap_support`` hook
for methods that declare ``Capability.HOTSWAP``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from .errors import ConfigError, LoadError, MergeError, UnsupportedOperation

if TYPE_CHECKING:
    from torch import nn

    from .config import PeftConfig
    from .layer import AdapterLayer
    from .registry import MethodSpec


class HotswapSupport(Protocol):
    """What a method's ``peft_core_hotswap_support`` implementation returns."""

    #: config fields that change outputs beyond the tensors and the numbers
    #: :meth:`update_settings` rewrites; two adapters swap only when these agree
    compatible_fields: tuple[str, ...]

    def update_settings(self, layer: AdapterLayer, adapter_name: str, config: PeftConfig, module_name: str) -> None:
        """Write the new adapter's per-layer numbers (LoRA's scaling) into ``layer``,
        in place when they are tensors so compiled graphs stay valid."""

    def prepare(self, layer: AdapterLayer, adapter_name: str, target_rank: int | None) -> None:
        """Turn per-adapter numbers into tensors and, with ``target_rank``, zero-pad the
        adapter's tensors to that rank (outputs must not change)."""

    def prepare_config(self, config: PeftConfig, target_rank: int) -> None:
        """Record ``target_rank`` in ``config`` (so the padded adapter saves consistently)."""


def _support(spec: MethodSpec, operation: str) -> HotswapSupport:
    from .plugins import hook
    from .registry import Capability

    spec.require(Capability.HOTSWAP, operation)
    support = hook().peft_core_hotswap_support(spec=spec)
    if support is None:
        raise UnsupportedOperation(
            f"{spec.name} declares '{Capability.HOTSWAP.value}' but no installed plugin implements "
            "peft_core_hotswap_support for it; reinstall its plugin."
        )
    return support


def _is_compiled(model: nn.Module) -> bool:
    return hasattr(model, "_orig_mod") or getattr(model, "_compiled_call_impl", None) is not None


def check_hotswap_configs_compatible(config0: PeftConfig, config1: PeftConfig) -> None:
    """Raise :class:`ConfigError` unless an adapter with ``config1`` can replace one with ``config0``."""
    from .plugins import registry

    if str(config0.peft_type) != str(config1.peft_type):
        raise ConfigError(
            f"cannot hot-swap a {config1.peft_type} adapter into a {config0.peft_type} adapter; "
            "load it next to the other one with load_adapter instead."
        )
    support = _support(registry().for_config(config0), "hot-swapping")
    for field in support.compatible_fields:
        a, b = getattr(config0, field, None), getattr(config1, field, None)
        if a != b:
            raise ConfigError(
                f"the adapters differ in {field!r} ({a!r} vs {b!r}), which a hot-swap cannot change; "
                "load the new adapter with load_adapter and switch with set_adapter instead."
            )


def hotswap_adapter_from_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    adapter_name: str,
    config: PeftConfig,
) -> None:
    """Copy ``state_dict`` (on-disk keys) into adapter ``adapter_name`` in place; all-or-nothing.

    Every key and shape is checked before anything is written. Keys the current adapter does
    not have (the new adapter targets other modules) raise :class:`LoadError`: a compiled
    graph cannot grow new adapter layers. Tensors of the current adapter the new one lacks
    are zeroed (the layer then contributes nothing, for additive methods). A smaller new
    tensor is zero-padded into the larger current one (ranks prepared with
    :func:`prepare_model_for_compiled_hotswap`); a larger one raises.
    """
    from .plugins import hook
    from .serialization import DISK_PREFIX, adapter_entries, tuner_of

    tuner = tuner_of(model)
    old_config = tuner._config(adapter_name)
    check_hotswap_configs_compatible(old_config, config)
    spec = tuner.spec_for(adapter_name)
    support = _support(spec, "hot-swapping")
    merged = [n for n, layer in tuner.adapter_layers() if adapter_name in layer.merged_adapters]
    if merged:
        raise MergeError(
            f"adapter {adapter_name!r} is merged into the base weights (e.g. {merged[0]!r}); call "
            "unmerge_adapter() before hot-swapping, or the later unmerge would corrupt the base weights."
        )
    state = dict(state_dict)
    hook().peft_core_state_dict_post_load(
        spec=spec, config=config, adapter_name=adapter_name, model=tuner.model, state_dict=state
    )
    entries = adapter_entries(tuner, adapter_name)
    if state and not any(k in entries for k in state) and any(DISK_PREFIX + k in entries for k in state):
        state = {DISK_PREFIX + k: v for k, v in state.items()}
    unexpected = sorted(k for k in state if k not in entries)
    if unexpected:
        raise LoadError(
            f"cannot hot-swap adapter {adapter_name!r}: the new adapter has tensors for modules the current one does "
            f"not adapt ({', '.join(unexpected[:5])}{', …' if len(unexpected) > 5 else ''}). Hot-swapping needs the "
            "same (or fewer) target modules; load it with load_adapter instead."
        )
    too_big = []
    for key, value in state.items():
        current = entries[key][1]
        if value.dim() != current.dim() or any(n > o for n, o in zip(value.shape, current.shape)):
            too_big.append(f"{key}: new {tuple(value.shape)} vs current {tuple(current.shape)}")
    if too_big:
        raise LoadError(
            f"cannot hot-swap adapter {adapter_name!r} in place: {'; '.join(too_big[:3])}. Pad the current adapter "
            "first with prepare_model_for_compiled_hotswap(model, target_rank=<the largest rank you will load>) "
            "before compiling the model."
        )
    layer_keys = {
        f"{DISK_PREFIX}{tuner.disk_path(path)}.{local}"
        for path, layer in tuner.adapter_layers()
        for local in layer.adapter_state_dict(adapter_name)
    }
    with torch.no_grad():
        for key, (_, current) in entries.items():
            value = state.get(key)
            if value is None:
                if key in layer_keys:  # base biases, full module copies: keep
                    current.zero_()
            elif value.shape == current.shape:
                current.copy_(value.to(device=current.device, dtype=current.dtype))
            else:
                current.zero_()
                current[tuple(slice(0, n) for n in value.shape)].copy_(value.to(device=current.device, dtype=current.dtype))
        for name, layer in tuner.adapter_layers():
            if layer.has_adapter(adapter_name):
                support.update_settings(layer, adapter_name, config, name)


def hotswap_adapter(
    model: nn.Module,
    model_name_or_path: str | os.PathLike,
    adapter_name: str,
    torch_device: str | None = None,
    **kwargs: Any,
) -> None:
    """Replace the weights of the loaded adapter ``adapter_name`` with those saved at ``model_name_or_path``.

    ``model`` may be a ``PeftModel`` or a ``torch.compile``d one: nothing is added to or
    removed from the module tree and tensors are rewritten in place, so compiled graphs stay
    valid (call :func:`prepare_model_for_compiled_hotswap` before compiling when ranks or
    alphas differ). The adapter keeps its name and config. Local directories only
    (``subfolder=`` is honoured); the swap is all-or-nothing.
    """
    from .config import PeftConfig
    from .serialization import load_peft_weights

    subfolder = kwargs.get("subfolder")
    path = Path(model_name_or_path) / subfolder if subfolder else Path(model_name_or_path)
    config = PeftConfig.from_pretrained(path)
    if torch_device is None:
        from .serialization import tuner_of

        torch_device = str(next((p.device for p in tuner_of(model).model.parameters()), "cpu"))
    state = load_peft_weights(path, device=torch_device)
    hotswap_adapter_from_state_dict(model, state, adapter_name, config)


def prepare_model_for_compiled_hotswap(
    model: nn.Module,
    *,
    target_rank: int | None = None,
    config: PeftConfig | dict[str, PeftConfig] | None = None,
    check_compiled: Literal["error", "warn", "ignore"] = "error",
) -> None:
    """Make a model ready for hot-swaps of adapters with other ranks or alphas under ``torch.compile``.

    Call it after loading the first adapter and *before* compiling. Every adapter is padded
    to ``target_rank`` (the largest rank you will swap in) with zeros, which changes no
    output, and per-adapter numbers become tensors. With ``config`` (one config or
    ``model.peft_config``) the rank recorded in the configs is set to ``target_rank`` too.
    """
    from .plugins import registry
    from .serialization import tuner_of

    if check_compiled not in ("error", "warn", "ignore"):
        raise ConfigError(f"check_compiled must be 'error', 'warn' or 'ignore', got {check_compiled!r}.")
    if _is_compiled(model):
        message = "prepare_model_for_compiled_hotswap must run before torch.compile; padding now forces a recompile."
        if check_compiled == "error":
            raise ConfigError(message + " Call it on the uncompiled model.")
        if check_compiled == "warn":
            warnings.warn(message, UserWarning, stacklevel=2)
    if target_rank is not None and (isinstance(target_rank, bool) or not isinstance(target_rank, int) or target_rank <= 0):
        raise ConfigError(f"target_rank must be a positive integer, got {target_rank!r}.")
    tuner = tuner_of(model)
    found = False
    for _, layer in tuner.adapter_layers():
        spec = registry().get(layer.method)
        support = _support(spec, "preparing for compiled hot-swapping")
        for adapter in layer.adapter_names:
            support.prepare(layer, adapter, target_rank)
            found = True
    if not found:
        raise ConfigError("the model has no adapter layers; load the first adapter before preparing for hot-swapping.")
    if config is None or target_rank is None:
        return
    configs = config.values() if isinstance(config, dict) else [config]
    for cfg in configs:
        _support(registry().for_config(cfg), "preparing for compiled hot-swapping").prepare_config(cfg, target_rank)
