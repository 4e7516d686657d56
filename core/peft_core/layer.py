"""The adapter layer protocol every layer-wrapping method follows.

An :class:`AdapterLayer` wraps one base module and holds, per adapter name, the method's
parameters (in ``nn.ModuleDict``/``nn.ParameterDict`` attributes listed in
``adapter_layer_names``) and settings (plain dicts listed in ``other_param_names``). The
base class owns what is the same for every method: which adapters are active, which are
merged, disabling, deleting, routing rows of a mixed batch, and merging through the
weight hooks — so a method writes ``update_layer``, ``apply_adapter`` and
``get_delta_weight`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import AdapterNameError, MergeError
from .modules import init_module_state, set_child
from .weights import LayerDescription, dense_weight, write_dense_weight


class AdapterLayer(nn.Module):
    """Base class of adapter layers. Merging is always an explicit call, never a side effect."""

    #: the ``peft_type`` this layer belongs to
    method: ClassVar[str] = ""
    #: attributes (ModuleDict/ParameterDict/BufferDict-like) holding per-adapter tensors
    adapter_layer_names: ClassVar[tuple[str, ...]] = ()
    #: attributes (plain dicts) holding per-adapter settings
    other_param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        if type(self).__mro__[type(self).__mro__.index(AdapterLayer) + 1] is nn.Module:
            init_module_state(self)  # injection builds thousands of layers: nn.Module's state in one step
        else:  # a cooperative base class between this one and nn.Module gets its __init__
            super().__init__()
        set_child(self, "base_layer", base_layer)
        # plain attributes go straight into __dict__: nn.Module.__setattr__'s Parameter/Module/buffer
        # checks cost more than the rest of building a small layer, and injection builds thousands
        plain = self.__dict__
        plain["description"] = description
        plain["_active_adapters"] = []
        plain["merged_adapters"] = []
        plain["_disable_adapters"] = False
        #: mixed-batch routing (a :class:`~peft_core.routing.RoutingPlan`), set around one forward by the model
        plain["_routing"] = None
        for name in self.other_param_names:
            plain[name] = {}

    # -- to implement ---------------------------------------------------------------------

    def update_layer(self, adapter_name: str, config: Any, **kwargs: Any) -> None:
        """Create the parameters of a new adapter from its config."""
        raise NotImplementedError

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """Return ``result`` (the base output for input ``x``) with one adapter applied."""
        raise NotImplementedError

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The adapter's change to the base weight, canonical ``(out, in, *kernel)`` layout."""
        raise NotImplementedError

    def get_delta_bias(self, adapter_name: str) -> torch.Tensor | None:
        """The adapter's change to the base bias, if it has one."""
        return None

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """The base weight with the adapter merged in. Additive by default; override for others."""
        return weight + self.get_delta_weight(adapter_name).to(weight.dtype)

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """Inverse of :meth:`merged_weight`."""
        return weight - self.get_delta_weight(adapter_name).to(weight.dtype)

    def merges_additively(self, adapter_name: str) -> bool:
        """Whether merging adds a change that does not depend on the weight it is merged into.

        True for the default :meth:`merged_weight`; a method that rotates, scales or
        renormalises the weight (OFT, IA³, DoRA) returns False. Such an adapter, in a layer
        stacked over another method's layer, merges only once the inner adapters are merged:
        merged earlier, it would act on the bare base weight instead of what the inner layer computes.
        """
        return type(self).merged_weight is AdapterLayer.merged_weight

    def merged_bias(self, adapter_name: str) -> torch.Tensor | None:
        """The base bias with the adapter merged in; ``None`` when the adapter leaves the bias alone.

        Additive (base bias + :meth:`get_delta_bias`) by default; multiplicative methods override
        this and :meth:`unmerged_bias` the way they override the weight pair.
        """
        delta = self.get_delta_bias(adapter_name)
        if delta is None:
            return None
        bias = self._base_bias(adapter_name)
        return bias + delta.to(bias.dtype)

    def unmerged_bias(self, adapter_name: str) -> torch.Tensor | None:
        """Inverse of :meth:`merged_bias`, applied to the current (merged) base bias."""
        delta = self.get_delta_bias(adapter_name)
        if delta is None:
            return None
        bias = self._base_bias(adapter_name)
        return bias - delta.to(bias.dtype)

    # -- state ----------------------------------------------------------------------------

    @property
    def adapter_names(self) -> list[str]:
        """Adapters this layer holds, in insertion order."""
        if not self.adapter_layer_names:
            return []
        return list(getattr(self, self.adapter_layer_names[0]).keys())

    def has_adapter(self, adapter_name: str) -> bool:
        return any(adapter_name in getattr(self, attr) for attr in self.adapter_layer_names)

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active_adapters)

    @property
    def active_adapter(self) -> str | list[str]:
        return self._active_adapters[0] if len(self._active_adapters) == 1 else list(self._active_adapters)

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    @property
    def disable_adapters(self) -> bool:
        return self._disable_adapters

    # Model code reads its layers' tensors directly (T5 checks ``self.wo.weight.dtype``,
    # several models look at ``.bias``); a wrapped layer must still answer for the base.
    @property
    def weight(self) -> torch.Tensor:
        return base_of(self.base_layer).weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(base_of(self.base_layer), "bias", None)

    def adapter_parameters(self, adapter_name: str) -> list[nn.Parameter]:
        return _parameters_of(adapter_name, [getattr(self, attr) for attr in self.adapter_layer_names])

    def set_adapter(self, adapter_names: str | Sequence[str], trainable: dict[str, bool] | None = None) -> None:
        """Activate ``adapter_names`` (those this layer holds); set which get gradients."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        # runs per layer on every injection, load and switch: containers looked up once, without
        # nn.Module.__getattr__, and the ModuleDicts' own dicts asked directly
        children = self._modules
        containers = [children[a] if a in children else getattr(self, a) for a in self.adapter_layer_names]
        lookups = [adapter_entries(c) for c in containers]
        active = [n for n in names if any(n in lookup for lookup in lookups)]
        self.__dict__["_active_adapters"] = active
        own = type(self).adapter_parameters is AdapterLayer.adapter_parameters
        trainable = trainable or {}
        for name in self.adapter_names:  # a property some methods override (their first container may not hold all)
            wanted = name in active and trainable.get(name, True)
            # adapter_parameters inlined over containers looked up once: this runs per adapter and layer on every load
            params = _parameters_of(name, containers) if own else self.adapter_parameters(name)
            for param in params:
                if param.requires_grad != wanted:  # most flags are right already; requires_grad_ is a call into torch
                    param.requires_grad_(wanted)

    def train(self, mode: bool = True) -> AdapterLayer:
        """``nn.Module.train``, cheaper over many adapters: leaf adapter modules already in ``mode`` are skipped.

        ``model.eval()`` runs on every ``load_adapter``; the generic walk visits each adapter's
        modules of each layer, so loading got slower with every adapter already loaded.
        """
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for child in self._modules.values():
            if child is None:
                continue
            if type(child) is not nn.ModuleDict:
                child.train(mode)
                continue
            child.training = mode
            for item in child._modules.values():
                if item is not None and (item.training != mode or item._modules or type(item).train is not nn.Module.train):
                    item.train(mode)
        return self

    def enable_adapters(self, enabled: bool) -> None:
        """Enable or disable every adapter of this layer (disabling unmerges first)."""
        if not enabled and self.merged:
            self.unmerge()
        self._disable_adapters = not enabled

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.merged_adapters:
            raise MergeError(f"adapter {adapter_name!r} is merged; unmerge it before deleting it.")
        for attr in (*self.adapter_layer_names, *self.other_param_names):
            container = getattr(self, attr)
            if adapter_name in container:
                del container[adapter_name]
        if adapter_name in self._active_adapters:
            self._active_adapters.remove(adapter_name)

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """Live tensors of one adapter, keyed as on disk relative to this layer (``lora_A.weight``)."""
        out: dict[str, torch.Tensor] = {}
        for attr in self.adapter_layer_names:
            container = getattr(self, attr)
            if adapter_name not in container:
                continue
            item = container[adapter_name]
            if isinstance(item, nn.Module):
                for key, tensor in item.state_dict(keep_vars=True).items():
                    out[f"{attr}.{key}"] = tensor
            else:
                out[attr] = item
        return out

    def adapter_module_key(self, local_key: str, adapter_name: str) -> str:
        """Where a disk key lives in this module's own state dict: ``lora_A.weight`` → ``lora_A.<name>.weight``."""
        attr, _, rest = local_key.partition(".")
        return f"{attr}.{adapter_name}.{rest}" if rest else f"{attr}.{adapter_name}"

    # -- merging --------------------------------------------------------------------------

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        """Merge adapters (default: the active ones) into the base weights via the weight hooks.

        With ``safe_merge`` the merged weight is computed aside and checked for NaN/inf
        before anything is written; a bad adapter raises :class:`MergeError` and the base
        weights are untouched.
        """
        names = list(self._active_adapters if adapter_names is None else adapter_names)
        for name in names:
            if not self.has_adapter(name):
                raise AdapterNameError(f"adapter {name!r} is not in this layer (it holds {self.adapter_names}).")
            if name in self.merged_adapters:
                continue
            if not self.merges_additively(name):
                self._require_inner_merged(name)
            base = self.base_layer
            new_weight = self.merged_weight(dense_weight(base), name)
            new_bias = self.merged_bias(name)
            if safe_merge and not torch.isfinite(new_weight).all():
                raise MergeError(f"merging adapter {name!r} gives NaN/inf weights; the adapter is broken, nothing was merged.")
            if safe_merge and new_bias is not None and not torch.isfinite(new_bias).all():
                raise MergeError(f"merging adapter {name!r} gives NaN/inf biases; nothing was merged.")
            write_dense_weight(base, new_weight)
            if new_bias is not None:
                with torch.no_grad():
                    base.bias.copy_(new_bias)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Undo merges, last merged first."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            base = self.base_layer
            write_dense_weight(base, self.unmerged_weight(dense_weight(base), name))
            new_bias = self.unmerged_bias(name)
            if new_bias is not None:
                with torch.no_grad():
                    base.bias.copy_(new_bias)

    def _require_inner_merged(self, adapter_name: str) -> None:
        inner = self.base_layer
        while isinstance(inner, AdapterLayer):
            pending = [n for n in inner.active_adapters if n not in inner.merged_adapters]
            if pending and not inner.disable_adapters:
                raise MergeError(
                    f"adapter {adapter_name!r} ({self.method}) wraps a {inner.method} layer whose active adapters "
                    f"{pending} are not merged; merge those first (merge_adapter() with no names merges in the right order)."
                )
            inner = inner.base_layer

    def _base_bias(self, adapter_name: str) -> torch.Tensor:
        bias = getattr(self.base_layer, "bias", None)
        if bias is None:
            raise MergeError(
                f"adapter {adapter_name!r} has a bias term but the base layer has no bias to merge it into."
            )
        return bias.detach()

    # -- forward --------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self._routing is not None:
            if self.merged:
                raise MergeError("a mixed batch (adapter_names=...) cannot run while adapters are merged; unmerge first.")
            return self._forward_routed(x, self.base_layer(x, *args, **kwargs))
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for name in self._active_adapters:
            result = self.apply_adapter(x, result, name)
        return result

    def _forward_routed(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """Apply each adapter to its own rows only; rows of ``__base__`` stay base output."""
        assert self._routing is not None
        for name, rows in self._routing.for_rows(x.shape[0], x.device):
            if not self.has_adapter(name):
                continue
            sub = self.apply_adapter(x.index_select(0, rows), result.index_select(0, rows), name)
            result = result.index_copy(0, rows, sub.to(result.dtype))
        return result

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names}, active={self._active_adapters}, merged={self.merged_adapters}"


def _parameters_of(adapter_name: str, containers: Sequence[Any]) -> list[nn.Parameter]:
    """The trainable tensors of one adapter in a layer's per-adapter containers."""
    params: list[nn.Parameter] = []
    for container in containers:
        lookup = adapter_entries(container)
        if adapter_name not in lookup:
            continue
        item = lookup[adapter_name]
        if isinstance(item, nn.Module) and not item._modules:  # a leaf (lora_A's Linear): skip the generic walk
            for param in item._parameters.values():
                if param is not None:
                    params.append(param)
            continue
        # frozen buffers (a BufferDict's tensors) are saved with the adapter but never trained
        params.extend(item.parameters() if isinstance(item, nn.Module) else [item] if isinstance(item, nn.Parameter) else [])
    return params


def adapter_entries(container: Any) -> Any:
    """The mapping to look one adapter up in, in a per-adapter container (``adapter_layer_names``).

    A ``ModuleDict``'s own dict: its ``__contains__``/``__getitem__`` cost a call each, on paths
    that run per adapter and layer on every injection and load.
    """
    return container._modules if type(container) is nn.ModuleDict else container


def base_of(module: nn.Module) -> nn.Module:
    """The original module under any number of stacked adapter layers."""
    while isinstance(module, AdapterLayer):
        module = module.base_layer
    return module


def stacked_weight(module: nn.Module) -> torch.Tensor:
    """The dense weight ``module`` effectively computes with, differentiable in its adapters.

    For a plain module, its weight. For adapter layers stacked on one module (mixed-method
    models), the base weight with each layer's active, unmerged adapters merged in, innermost
    first. A layer that cannot apply its adapter to the layer below's *output* (a rotation of
    convolution patches) runs with this weight instead, so the adapters below are not lost.
    """
    chain = []
    while isinstance(module, AdapterLayer):
        chain.append(module)
        module = module.base_layer
    weight = dense_weight(module)
    for layer in reversed(chain):
        if layer.disable_adapters:
            continue
        for name in layer.active_adapters:
            if name not in layer.merged_adapters:
                weight = layer.merged_weight(weight, name)
    return weight
