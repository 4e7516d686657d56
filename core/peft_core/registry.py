"""The method registry: what each installed plugin says its methods are and can do.

A :class:`MethodSpec` is the only thing the core knows about a method. Everything the
core does for a method (config dispatch by ``peft_type``, which checks the conformance
suite runs, which operations raise :class:`UnsupportedOperation`) is derived from it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DuplicateMethodError, UnknownMethodError, UnsupportedOperation

if TYPE_CHECKING:
    from torch import nn

    from .config import PeftConfig


class Capability(str, enum.Enum):
    """Operations a method may support. Undeclared ones raise :class:`UnsupportedOperation`."""

    MERGE = "merge"  # merge/unmerge into the base weights, merge_and_unload
    UNLOAD = "unload"  # remove the adapter layers and return the base model
    DISABLE = "disable"  # disable_adapter() gives the base output
    MULTI_ADAPTER = "multi_adapter"  # several named adapters on one model
    MULTI_ACTIVE = "multi_active"  # several adapters active at once
    MIXED_BATCH = "mixed_batch"  # adapter_names=[...] routes rows to adapters
    IDENTITY_AT_INIT = "identity_at_init"  # a fresh adapter leaves outputs unchanged
    WEIGHTED_COMBINE = "weighted_combine"  # add_weighted_adapter
    HOTSWAP = "hotswap"  # hotswap_adapter replaces weights in place
    MIXED_METHODS = "mixed_methods"  # can share a model with adapters of other methods
    QUANTIZED_BASE = "quantized_base"  # adapts quantized base layers through the weight hooks
    INPUT_TRANSFORM = "input_transform"  # changes the inputs or attention cache (prompt learning), not layers


#: A method built on the generic layer protocol usually supports all of these.
LAYER_METHOD_CAPABILITIES = frozenset(
    {
        Capability.MERGE,
        Capability.UNLOAD,
        Capability.DISABLE,
        Capability.MULTI_ADAPTER,
        Capability.MULTI_ACTIVE,
        Capability.MIXED_BATCH,
        Capability.IDENTITY_AT_INIT,
    }
)


@dataclass(frozen=True)
class MethodSpec:
    """Everything the core needs to know about one method.

    ``name`` is the on-disk ``peft_type`` (``"LORA"``); ``prefix`` starts the names of the
    method's adapter attributes (``"lora_"``) and must be unique among installed methods so
    that state-dict keys say which method owns them, unless one of the two methods names the
    other in ``shares_prefix_with``: a method whose layers are distinct classes and which never
    shares a model with the other (no ``MIXED_METHODS``) may reuse its prefix, as AdaLoRA
    reuses LoRA's ``"lora_"`` on disk (``peft_type`` in ``adapter_config.json`` tells them
    apart). ``tuner_methods`` are extra methods of the tuner (``model.base_model.<name>(...)``),
    called as ``fn(tuner, *args, **kwargs)``: AdaLoRA's ``update_and_allocate``. ``layer_factory(target, description,
    config, adapter_name, module_name=...)`` builds an adapter layer around a base module.
    ``extra_parameters(model, config)`` names base-model parameters the method also trains
    and saves (LoRA's ``bias="all"``). ``unsupported`` gives the reason for capabilities
    the method lacks, shown in the :class:`UnsupportedOperation` message.
    ``init_shared(tuner, config, adapter_name)`` is called once an adapter's layers are in place,
    for tensors one adapter shares among all its layers (VeRA's projections): it puts them in
    ``tuner.shared_tensors`` (:class:`~peft_core.shared.SharedTensors`), which saves, loads and
    deletes them with the adapter. If it raises, the adapter is removed again.
    """

    name: str
    config_class: type[PeftConfig]
    prefix: str
    layer_factory: Callable[..., nn.Module] | None = None
    capabilities: frozenset[Capability] = LAYER_METHOD_CAPABILITIES
    unsupported: Mapping[Capability, str] = field(default_factory=dict)
    extra_parameters: Callable[[nn.Module, PeftConfig], Iterable[str]] | None = None
    exports: Mapping[str, Any] = field(default_factory=dict)
    shares_prefix_with: tuple[str, ...] = ()
    tuner_methods: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    init_shared: Callable[[Any, PeftConfig, str], None] | None = None
    #: the ``PeftModel.base_model`` class for this method (``None``: the layer tuner, ``AdapterModel``). A method
    #: that is more than layers (X-LoRA: a classifier mixing loaded LoRA experts) subclasses ``AdapterModel``.
    tuner_class: type | None = None
    description: str = ""
    paper: str = ""
    distribution: str | None = None  # filled in by the plugin manager
    plugin_name: str | None = None  # filled in by the plugin manager

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, operation: str) -> None:
        """Raise a clear :class:`UnsupportedOperation` unless the method declares ``capability``."""
        if capability in self.capabilities:
            return
        reason = self.unsupported.get(capability, f"the {self.name} plugin does not declare '{capability.value}'")
        raise UnsupportedOperation(f"{operation} is not supported for {self.name} adapters: {reason}.")


class MethodRegistry:
    """Installed methods by ``peft_type``; filled through ``peft_core_register_methods``."""

    def __init__(self) -> None:
        self._by_name: dict[str, MethodSpec] = {}
        self._current_plugin: tuple[str, str | None] = ("<unknown>", None)
        self.failures: dict[str, str] = {}  # plugin name -> why it was skipped
        self._exports: dict[str, tuple[Any, str]] = {}  # public name -> (object, plugin) of method-less plugins

    def register(self, spec: MethodSpec) -> None:
        """Add a method. Two plugins claiming one name or prefix is a :class:`DuplicateMethodError`."""
        plugin, dist = self._current_plugin
        spec = _replace(spec, plugin_name=spec.plugin_name or plugin, distribution=spec.distribution or dist)
        name = spec.name.upper()
        if name in self._by_name:
            other = self._by_name[name]
            raise DuplicateMethodError(
                f"method {name!r} is registered by plugin {other.plugin_name!r} ({other.distribution}) "
                f"and again by plugin {spec.plugin_name!r} ({spec.distribution}); uninstall one of them "
                "or block one with PEFT_CORE_DISABLE_PLUGINS."
            )
        clashes = [
            other for other in self._by_name.values()
            if (spec.prefix.startswith(other.prefix) or other.prefix.startswith(spec.prefix))
            # declared reuse (either side): distinct layers, never on one model together
            and other.name.upper() not in {n.upper() for n in spec.shares_prefix_with}
            and name not in {n.upper() for n in other.shares_prefix_with}
        ]
        if clashes:
            owners = "; ".join(f"prefix {o.prefix!r} of method {o.name!r} (plugin {o.plugin_name!r}, {o.distribution})"
                               for o in clashes)
            raise DuplicateMethodError(
                f"state-dict prefix {spec.prefix!r} of method {name!r} (plugin {spec.plugin_name!r}, "
                f"{spec.distribution}) overlaps {owners}; saved keys would be ambiguous."
            )
        self._by_name[name] = spec

    def get(self, name: str) -> MethodSpec:
        key = str(getattr(name, "value", name)).upper()
        try:
            return self._by_name[key]
        except KeyError:
            installed = ", ".join(sorted(self._by_name)) or "none"
            hint = ""
            from .known import distribution_for_peft_type

            dist = distribution_for_peft_type(key)
            if dist:
                hint = f" Install it with `pip install {dist}`."
            raise UnknownMethodError(f"no installed plugin provides method {key!r} (installed: {installed}).{hint}")

    def for_config(self, config: PeftConfig) -> MethodSpec:
        return self.get(config.peft_type)

    def __contains__(self, name: object) -> bool:
        return str(name).upper() in self._by_name

    def __iter__(self):
        return iter(sorted(self._by_name.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._by_name)

    def add_exports(self, exports: Mapping[str, Any]) -> None:
        """Publish names as ``peft_core.<name>`` for a plugin that registers no method.

        Extension plugins (LoRA initialisations such as EVA) add functions and config
        classes but no ``peft_type``, so they have no :class:`MethodSpec` to carry
        ``exports``; they call this from ``peft_core_register_methods`` instead. A name
        another plugin already exports is a :class:`DuplicateMethodError`.
        """
        plugin = self._current_plugin[0]
        for public_name, obj in exports.items():
            owner = self._exports.get(public_name)
            if owner is not None and owner[0] is not obj:
                raise DuplicateMethodError(
                    f"name {public_name!r} is exported by plugin {owner[1]!r} and again by plugin {plugin!r}; "
                    "uninstall one of them or block one with PEFT_CORE_DISABLE_PLUGINS."
                )
            self._exports[public_name] = (obj, plugin)

    def find_export(self, public_name: str) -> Any:
        """The object a plugin exports under ``public_name`` (its config class included), or None."""
        for spec in self._by_name.values():
            if spec.config_class.__name__ == public_name:
                return spec.config_class
            if public_name in spec.exports:
                return spec.exports[public_name]
        found = self._exports.get(public_name)
        return None if found is None else found[0]


def _replace(spec: MethodSpec, **changes: Any) -> MethodSpec:
    from dataclasses import replace

    return replace(spec, **changes)
