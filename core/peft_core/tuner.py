"""Putting adapters into a model and managing them: the method-independent tuner.

:class:`AdapterModel` is what ``PeftModel.base_model`` is (PEFT's ``LoraModel`` role, for
every method at once). It finds targets, asks the plugins to build adapter layers, swaps
them in, freezes the base, and implements add/set/delete/enable/disable, merging and
unloading on top of the :class:`~peft_core.layer.AdapterLayer` protocol.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import PeftConfig
from .errors import AdapterNameError, ConfigError, MergeError, TargetModulesError, UnsupportedOperation
from .layer import AdapterLayer, adapter_entries, base_of
from .modules import gc_paused, set_child
from .names import validate_adapter_name
from .plugins import hook, registry
from .registry import Capability, MethodSpec
from .shared import SharedTensors
from .targeting import TargetMatcher, find_target_modules, walk_modules
from .weights import dense_weight, require_description
from .wrappers import ModulesToSaveWrapper


def _split(name: str) -> tuple[str, str]:
    parent, _, child = name.rpartition(".")
    return parent, child


class AdapterModel(nn.Module):
    """Holds the user's model (``self.model``) with adapters injected, and their configs."""

    def __init__(
        self,
        model: nn.Module,
        peft_config: PeftConfig | dict[str, PeftConfig],
        adapter_name: str = "default",
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.peft_config: dict[str, PeftConfig] = {}
        self._active: list[str] = []
        self._layers_cache: list[tuple[str, nn.Module]] | None = None
        #: per-adapter tensors shared by all layers of an adapter (filled by ``MethodSpec.init_shared``)
        self.shared_tensors = SharedTensors()
        self._stacked: dict[str, str] = {}
        configs = peft_config if isinstance(peft_config, dict) else {adapter_name: peft_config}
        for name, config in configs.items():
            self.inject_adapter(config, name, autocast_adapter_dtype=autocast_adapter_dtype)
        wanted = adapter_name if adapter_name in self.peft_config else next(iter(self.peft_config))
        if self._active != [wanted]:  # inject_adapter already activated it in the one-adapter case
            self.set_adapter(wanted)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            for config in self.__dict__.get("peft_config", {}).values():  # methods' tuner_methods
                method = registry().for_config(config).tuner_methods.get(name)
                if method is not None:
                    return functools.partial(method, self)
            return getattr(self.model, name)

    # -- lookup ---------------------------------------------------------------------------

    def spec_for(self, adapter_name: str) -> MethodSpec:
        return registry().for_config(self._config(adapter_name))

    def _config(self, adapter_name: str) -> PeftConfig:
        try:
            return self.peft_config[adapter_name]
        except KeyError:
            raise AdapterNameError(
                f"no adapter named {adapter_name!r}; this model has: {sorted(self.peft_config) or 'none'}."
            ) from None

    def adapter_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of every adapter layer and modules_to_save wrapper (cached).

        Layers of different methods stacked on one module (mixed-method models) are all
        listed, outermost first; an inner layer's name ends in ``.base_layer`` as in the
        model's state dict (:meth:`disk_path` gives the module path saved files use).
        """
        if self._layers_cache is None:
            found: list[tuple[str, nn.Module]] = []
            self._stacked: dict[str, str] = {}
            for name, m in walk_modules(self.model):
                if isinstance(m, ModulesToSaveWrapper):
                    found.append((name, m))
                    continue
                inner, path = m, name
                while isinstance(inner, AdapterLayer):
                    found.append((path, inner))
                    if path != name:
                        self._stacked[path] = name
                    inner, path = inner.base_layer, f"{path}.base_layer"
            self._layers_cache = found
        return self._layers_cache

    def disk_path(self, name: str) -> str:
        """The module path a saved adapter uses for the layer at ``name`` (stacking suffixes removed)."""
        self.adapter_modules()
        return self._stacked.get(name, name)

    def layers_innermost_first(self) -> list[tuple[str, AdapterLayer]]:
        """Adapter layers with stacked ones innermost first: the order merges must follow.

        A layer wrapping another applies its adapter to what the inner layer computes, so
        the inner adapters are merged into the base weight first (and unmerged last).
        """
        layers = list(self.adapter_layers())
        depth = {name: name.count(".base_layer") if name in self._stacked else 0 for name, _ in layers}
        return sorted(layers, key=lambda item: -depth[item[0]])

    def adapter_layers(self) -> Iterator[tuple[str, AdapterLayer]]:
        for name, module in self.adapter_modules():
            if isinstance(module, AdapterLayer):
                yield name, module

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active)

    @property
    def active_adapter(self) -> str | list[str]:
        return self._active[0] if len(self._active) == 1 else list(self._active)

    # -- injection ------------------------------------------------------------------------

    def _prefixes(self) -> tuple[str, ...]:
        return tuple(spec.prefix for spec in registry())

    def inject_adapter(self, config: PeftConfig, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """Add adapter ``adapter_name`` described by ``config``; all-or-nothing.

        Everything that can fail (validation, targeting, building layers) happens before
        the model is changed; if adding to existing layers fails half way, the adapter is
        removed again. The cyclic collector is paused meanwhile (:func:`peft_core.modules.gc_paused`).
        """
        with gc_paused():
            self._inject_adapter(config, adapter_name, autocast_adapter_dtype)

    def _inject_adapter(self, config: PeftConfig, adapter_name: str, autocast_adapter_dtype: bool) -> None:
        validate_adapter_name(adapter_name, self._prefixes())
        if adapter_name in self.peft_config:
            raise AdapterNameError(f"an adapter named {adapter_name!r} already exists; pick another name or delete it first.")
        spec = registry().for_config(config)
        if spec.layer_factory is None:
            raise UnsupportedOperation(f"{spec.name} does not wrap layers; it cannot be injected with this tuner.")
        if self.peft_config:
            spec.require(Capability.MULTI_ADAPTER, "adding a second adapter")
            others = {self.spec_for(n).name for n in self.peft_config}
            if others != {spec.name}:
                spec.require(Capability.MIXED_METHODS, f"adding a {spec.name} adapter next to {sorted(others)} adapters")
        config = self._resolve_targets(config, spec)
        problems = [p for ps in hook().peft_core_validate_config(config=config, model=self.model) if ps for p in ps]
        if problems:
            raise ConfigError(f"invalid {type(config).__name__} for this model: " + "; ".join(problems))

        matcher = TargetMatcher(config, self.model)
        kinds = _kinds(spec)
        new_layers: dict[str, nn.Module] = {}
        updates: list[tuple[str, AdapterLayer]] = []
        for name, module in find_target_modules(self.model, config, matcher):
            same = _layer_of_method(module, spec.name)
            if same is not None:  # this method's layer is there already (maybe under another method's)
                updates.append((name, same))
                continue
            if isinstance(module, AdapterLayer):
                spec.require(Capability.MIXED_METHODS, f"adding {spec.name} on top of a {module.method} layer")
                registry().get(module.method).require(Capability.MIXED_METHODS, f"adding {spec.name} on top of it")
            desc = require_description(base_of(module), name, spec.name, kinds, matcher.described.get(id(module)))
            if desc.quantized:  # a quantized base works only for methods that say so (and why not)
                spec.require(Capability.QUANTIZED_BASE, f"adapting the quantized layer {name!r}")
            layer = hook().peft_core_create_adapter_layer(
                spec=spec, target=module, module_name=name, description=desc, config=config, adapter_name=adapter_name
            )
            if layer is None:
                raise TargetModulesError(f"no plugin could build a {spec.name} layer for {name!r} ({type(module).__name__}).")
            _place_adapter(layer, adapter_name, desc, autocast_adapter_dtype)
            new_layers[name] = layer
        done: list[AdapterLayer] = []
        try:
            for name, layer in updates:
                desc = layer.description
                done.append(layer)  # before update_layer: a half-built adapter is removed too
                layer.update_layer(adapter_name, config, module_name=name)
                _place_adapter(layer, adapter_name, desc, autocast_adapter_dtype)
        except Exception:
            for layer in done:
                layer.delete_adapter(adapter_name)
            raise
        for name, layer in new_layers.items():
            self._replace(name, layer)
        self._wrap_modules_to_save(config, adapter_name)
        self.peft_config[adapter_name] = config
        self._layers_cache = None
        if spec.init_shared is not None:
            try:
                spec.init_shared(self, config, adapter_name)
            except Exception:
                self.delete_adapter(adapter_name)
                raise
        self._freeze_base()
        if self.leaves_other_adapters_alone(config):
            self._add_inactive(adapter_name, new_layers.values())
        else:
            self.set_adapter(self._active or [adapter_name])

    def leaves_other_adapters_alone(self, config: PeftConfig) -> bool:
        """Whether adding an adapter with ``config`` changes no other adapter's gradient flags.

        True when adapters are active already and the new one trains no shared tensors
        (``MethodSpec.extra_parameters``, like LoRA's ``bias``): then only the new adapter is
        configured (:meth:`_add_inactive`), and a failed load has only base flags to restore.
        Tuners that inject differently (their own ``inject_adapter``) answer False.
        """
        if type(self).inject_adapter is not AdapterModel.inject_adapter or not self._active:
            return False
        spec = registry().for_config(config)
        return spec.extra_parameters is None or not list(spec.extra_parameters(self.model, config))

    def _add_inactive(self, adapter_name: str, new_layers: Any) -> None:
        """What ``set_adapter(active)`` does after adding ``adapter_name`` next to the active ones.

        Only the new adapter's tensors change (frozen: it is not active) and only new layers
        need their activity set; the other adapters' flags are as ``set_adapter`` left them.
        Walking every adapter of every layer instead made each ``load_adapter`` slower than the last.
        """
        trainable = self._trainable()
        fresh = {id(layer) for layer in new_layers}
        for _, module in self.adapter_modules():
            if id(module) in fresh or not isinstance(module, AdapterLayer):  # new layers, modules_to_save wrappers
                module.set_adapter(self._active, trainable)
            elif module.has_adapter(adapter_name):
                for param in module.adapter_parameters(adapter_name):
                    param.requires_grad_(False)

    def _resolve_targets(self, config: PeftConfig, spec: MethodSpec) -> PeftConfig:
        if getattr(config, "target_modules", "unset") is not None:
            return config
        for_model = getattr(config, "target_modules_for_model", None)
        if for_model is not None:  # a default found in the model itself (trainable tokens: its input embedding)
            config.target_modules = for_model(self.model)
            return config
        model_type = getattr(getattr(self.model, "config", None), "model_type", None)
        defaults = getattr(config, "default_target_modules", lambda _t: None)(model_type)
        if not defaults:
            raise TargetModulesError(
                f"target_modules is not set and there is no default for model type {model_type!r}; "
                "pass target_modules (a list of module names, a regex, or 'all-linear')."
            )
        config.target_modules = set(defaults)
        return config

    def _wrap_modules_to_save(self, config: PeftConfig, adapter_name: str) -> None:
        wanted = getattr(config, "modules_to_save", None)
        if not wanted:
            return
        wanted = set(wanted)
        for name, module in list(walk_modules(self.model)):
            if not name or not any(name == w or name.endswith(f".{w}") for w in wanted):
                continue
            if isinstance(module, ModulesToSaveWrapper):
                module.update(adapter_name)
            elif not isinstance(module, AdapterLayer):
                parent, child = _split(name)
                setattr(self.model.get_submodule(parent) if parent else self.model, child,
                        ModulesToSaveWrapper(module, adapter_name))

    def _freeze_base(self) -> None:
        """Only adapter parameters (and what methods declare as extra) keep gradients.

        One walk over the base model's modules; the per-adapter containers of adapter
        layers are skipped instead of collecting every adapter's parameters first, so the
        cost does not grow with the number of adapters already loaded.
        """
        for _, module in walk_modules(self.model):
            if isinstance(module, AdapterLayer):
                _freeze_all_but_adapters(module)
            elif isinstance(module, ModulesToSaveWrapper):
                _freeze(module.original_module.parameters())
            else:
                _freeze(module._parameters.values())

    def tuner_entries(self, adapter_name: str) -> dict[str, tuple[str, torch.Tensor]]:
        """Tensors of ``adapter_name`` the tuner holds outside the model: ``disk key -> (state-dict key, tensor)``.

        None for layer methods. A tuner subclass that owns modules of its own (X-LoRA's classifier,
        saved by PEFT as ``base_model.internal_xlora_classifier...``) returns them, and saving and
        loading (:func:`peft_core.serialization.adapter_entries`) treat them like layer tensors.
        """
        return {}

    def _extra_parameters(self, adapter_name: str) -> dict[str, nn.Parameter]:
        spec, config = self.spec_for(adapter_name), self._config(adapter_name)
        if spec.extra_parameters is None:
            return {}
        wanted = list(spec.extra_parameters(self.model, config))
        if not wanted:  # the usual case; skip the walk over every parameter (set_adapter calls this per adapter)
            return {}
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in wanted if n in params}

    # -- activity -------------------------------------------------------------------------

    def set_adapter(self, adapter_name: str | Sequence[str], inference_mode: bool = False) -> None:
        """Make ``adapter_name`` (or several) the active adapter(s); they alone get gradients.

        Adapters loaded for inference (``inference_mode`` in their config) stay frozen;
        ``inference_mode=True`` freezes the newly active ones too, as in PEFT.
        """
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        if not names:
            raise AdapterNameError("set_adapter needs at least one adapter name.")
        for name in names:
            self._config(name)
        if len(names) > 1:
            for name in names:
                self.spec_for(name).require(Capability.MULTI_ACTIVE, "activating several adapters at once")
        trainable = self._trainable(names if inference_mode else ())
        for _, module in self.adapter_modules():
            module.set_adapter(names, trainable)
        for name in self.peft_config:
            wanted = name in names and trainable[name]
            for param in self._extra_parameters(name).values():
                param.requires_grad_(wanted)
        self._active = names

    def _trainable(self, frozen: Sequence[str] = ()) -> dict[str, bool]:
        """Which adapters may get gradients when active: not loaded for inference, not in ``frozen``."""
        return {n: not (c.inference_mode or n in frozen) for n, c in self.peft_config.items()}

    def _set_enabled(self, enabled: bool) -> None:
        for name in self._active:
            self.spec_for(name).require(Capability.DISABLE, "disabling adapters")
        for _, module in self.adapter_modules():
            module.enable_adapters(enabled)

    def enable_adapter_layers(self) -> None:
        self._set_enabled(True)

    def disable_adapter_layers(self) -> None:
        self._set_enabled(False)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove every trace of an adapter; a merged adapter is refused, untouched."""
        self._config(adapter_name)
        merged = [n for n, layer in self.adapter_layers() if adapter_name in layer.merged_adapters]
        if merged:
            raise MergeError(
                f"adapter {adapter_name!r} is merged into {len(merged)} layer(s) (e.g. {merged[0]!r}); "
                "call unmerge_adapter() before deleting it."
            )
        for _, module in self.adapter_modules():
            module.delete_adapter(adapter_name)
        self.shared_tensors.delete_adapter(adapter_name)
        del self.peft_config[adapter_name]
        if adapter_name in self._active or not self._active:  # deleting an inactive one leaves the others' state alone
            remaining = [n for n in self._active if n != adapter_name]
            if not remaining and self.peft_config:
                remaining = [sorted(self.peft_config)[0]]  # deterministic, as PEFT chooses
                if adapter_name in self._active:
                    warnings.warn(f"adapter {adapter_name!r} was active and is deleted; {remaining[0]!r} is now active.",
                                  UserWarning, stacklevel=3)
            self._active = []
            if remaining:
                self.set_adapter(remaining)
        self._remove_empty_layers()

    def _remove_empty_layers(self) -> None:
        """Layers and wrappers left with no adapter go back to their plain module."""
        for name, module in reversed(self.adapter_modules()):  # inner stacked layers before their wrappers
            if not module.adapter_names:
                base = module.base_layer if isinstance(module, AdapterLayer) else module.original_module
                self._replace(name, base)
        self._layers_cache = None

    def _replace(self, name: str, new: nn.Module) -> None:
        parent, child = _split(name)
        set_child(self.model.get_submodule(parent) if parent else self.model, child, new)

    # -- merging --------------------------------------------------------------------------

    def _require_all(self, capability: Capability, operation: str, names: Sequence[str] | None = None) -> None:
        for name in names if names is not None else list(self.peft_config):
            self.spec_for(name).require(capability, operation)

    def merge_adapter(self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False) -> None:
        """Merge the active (or given) adapters into the base weights; ``unmerge_adapter`` undoes it."""
        names = list(self._active if adapter_names is None else adapter_names)
        self._require_all(Capability.MERGE, "merging", names)
        if safe_merge:
            self._check_finite_merge(names)
        for layer_name, layer in self.layers_innermost_first():
            try:
                layer.merge(safe_merge=safe_merge, adapter_names=[n for n in names if layer.has_adapter(n)])
            except MergeError as exc:
                raise MergeError(f"layer {layer_name!r}: {exc}") from None

    def unmerge_adapter(self) -> None:
        for _, layer in self.adapter_layers():
            layer.unmerge()

    def merge_and_unload(
        self, progressbar: bool = False, safe_merge: bool = False, adapter_names: Sequence[str] | None = None
    ) -> nn.Module:
        """Merge adapters into the base weights and return the plain model (no adapter modules)."""
        names = list(self._active if adapter_names is None else adapter_names)
        self._require_all(Capability.MERGE, "merge_and_unload", names)
        if safe_merge:
            self._check_finite_merge(names)
        return self._unload(merge=True, names=names, progressbar=progressbar)

    def _check_finite_merge(self, names: Sequence[str]) -> None:
        """Check every layer before writing any, so a NaN/inf adapter leaves the model as it was."""
        for layer_name, layer in self.adapter_layers():
            for n in names:
                if layer.has_adapter(n) and n not in layer.merged_adapters:
                    w = layer.merged_weight(dense_weight(layer.base_layer), n)
                    bias = layer.merged_bias(n)
                    if not torch.isfinite(w).all() or (bias is not None and not torch.isfinite(bias).all()):
                        raise MergeError(f"layer {layer_name!r}: merging adapter {n!r} gives NaN/inf; nothing was merged.")

    def add_weighted_adapter(self, adapters: Sequence[str], weights: Sequence[float], adapter_name: str,
                             combination_type: str = "svd", **kwargs: Any) -> None:
        """Add a new adapter combining ``adapters``; see :func:`peft_core.merging.add_weighted_adapter`."""
        from .merging import add_weighted_adapter

        add_weighted_adapter(self, adapters, weights, adapter_name, combination_type, **kwargs)

    def unload(self) -> nn.Module:
        """Remove all adapter modules (unmerging first) and return the original model."""
        self._require_all(Capability.UNLOAD, "unload")
        return self._unload(merge=False, names=[], progressbar=False)

    def _unload(self, merge: bool, names: Sequence[str], progressbar: bool) -> nn.Module:
        modules = list(reversed(self.adapter_modules()))  # inner stacked layers merge (and go) first
        for name, module in tqdm(modules, desc="Unloading" + (" and merging" if merge else ""), disable=not progressbar):
            if isinstance(module, AdapterLayer):
                if merge:
                    module.merge(adapter_names=[n for n in names if module.has_adapter(n)])
                else:
                    module.unmerge()
                base = module.base_layer
            else:
                keep = module.active_adapter if merge else None
                base = module.modules_to_save[keep] if keep in module.modules_to_save else module.original_module
            self._replace(name, base)
        self._layers_cache = None
        return self.model


def _freeze(params: Any) -> None:
    for param in params:
        if param is not None and param.requires_grad:
            param.requires_grad_(False)


def _freeze_all_but_adapters(layer: AdapterLayer) -> None:
    """Freeze what an adapter layer holds besides its per-adapter containers (stacked layers too)."""
    _freeze(layer._parameters.values())
    per_adapter = layer.adapter_layer_names
    for name, child in layer._modules.items():  # not named_children(): its generator and memo, per layer
        if child is None or name in per_adapter:
            continue
        if isinstance(child, AdapterLayer):
            _freeze_all_but_adapters(child)
        elif not child._modules:  # a leaf base layer: its own parameters, without the generic member walk
            _freeze(child._parameters.values())
        elif type(child) is nn.ModuleDict and not any(m._modules for m in child._modules.values() if m is not None):
            # per-adapter leaves (LoRA's dropouts): visited on every add_adapter, so no generic walk per adapter
            _freeze(p for m in child._modules.values() if m is not None for p in m._parameters.values())
        else:
            _freeze(child.parameters())


def _layer_of_method(module: nn.Module, method: str) -> AdapterLayer | None:
    """The layer of ``method`` in a stack of adapter layers, if one is there."""
    while isinstance(module, AdapterLayer):
        if module.method == method:
            return module
        module = module.base_layer
    return None


def _kinds(spec: MethodSpec) -> tuple[str, ...]:
    return tuple(getattr(spec.config_class, "supported_layer_kinds", ("linear", "conv", "embedding")))


def _place_adapter(layer: AdapterLayer, adapter_name: str, desc: Any, autocast_adapter_dtype: bool) -> None:
    """Put a new adapter's tensors on the base layer's device; fp32 when the base is half precision.

    Keeping adapters in fp32 over an fp16/bf16 base (``autocast_adapter_dtype``) is what
    PEFT does: low-precision adapter updates lose small gradient steps.
    """
    dtype = desc.dtype
    if not dtype.is_floating_point or (autocast_adapter_dtype and dtype in (torch.float16, torch.bfloat16)):
        dtype = torch.float32
    for attr in layer.adapter_layer_names:
        container = getattr(layer, attr)
        items = adapter_entries(container)
        if adapter_name not in items:
            continue
        item = items[adapter_name]
        if isinstance(item, nn.Module):
            if not _placed(item, desc.device, dtype):  # Module.to is slow Python; most items are in place
                with torch.no_grad():
                    item.to(device=desc.device, dtype=dtype)
        elif item.device != desc.device or item.dtype != dtype:
            with torch.no_grad():
                item.data = item.data.to(device=desc.device, dtype=dtype)


def _placed(module: nn.Module, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``module.to(device=device, dtype=dtype)`` would change nothing."""
    if module._modules:
        tensors: Any = (*module.parameters(), *module.buffers())
    else:  # a leaf (lora_A's Linear): its own tensors, without the generic member walk
        tensors = [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
    for tensor in tensors:
        if tensor.device != device or (tensor.is_floating_point() and tensor.dtype != dtype):
            return False
    return True


@contextlib.contextmanager
def routing(tuner: AdapterModel, adapter_names: Sequence[str] | None, batch_size: int | None = None) -> Iterator[None]:
    """Route rows of a mixed batch to adapters for the duration of one forward/generate.

    Rows are grouped by adapter ONCE here; every layer then reuses the same index tensors.
    """
    if adapter_names is None:
        yield
        return
    from .names import BASE_ADAPTER_NAME

    if isinstance(adapter_names, str):
        raise AdapterNameError("adapter_names must be a list with one adapter name (or '__base__') per input row.")
    names = list(adapter_names)
    if batch_size is not None and len(names) != batch_size:
        raise AdapterNameError(f"adapter_names has {len(names)} entries but the batch has {batch_size} rows.")
    unknown = sorted({n for n in names if n != BASE_ADAPTER_NAME and n not in tuner.peft_config})
    if unknown:
        raise AdapterNameError(f"adapter_names mentions unknown adapters {unknown}; known: {sorted(tuner.peft_config)}.")
    for n in set(names) - {BASE_ADAPTER_NAME}:
        tuner.spec_for(n).require(Capability.MIXED_BATCH, "mixed-batch inference (adapter_names=...)")
    from .routing import RoutingPlan

    modules = [m for _, m in tuner.adapter_modules()]
    plan = RoutingPlan(names)  # rows grouped once, per row count (generate repeats rows for beams)
    if any(getattr(module, "merged", False) for module in modules):
        raise MergeError("a mixed batch (adapter_names=...) cannot run while adapters are merged; unmerge first.")
    for module in modules:
        module._routing = plan
    try:
        yield
    finally:
        for module in modules:
            module._routing = None
