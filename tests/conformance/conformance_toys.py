"""Toy method plugins for the conformance meta-tests: one correct, others broken on purpose.

Each toy is a tiny additive low-rank method (like the scaffold's) registered in-process
under its own name and state-dict prefix. A ``bug`` makes it wrong in exactly one way, so
the meta-tests can demand that exactly the matching checks fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

import torch
from torch import nn

from peft_core import AdapterLayer, ConfigError, MethodSpec, PeftConfig, hookimpl
from peft_core.plugins import register_plugin, registry, unregister_plugin
from peft_core.registry import LAYER_METHOD_CAPABILITIES, Capability

#: bug -> the checks it must fail (and no others)
EXPECTED_FAILURES = {
    None: set(),
    "merge": {"check_merge_unmerge_roundtrip", "check_merge_and_unload"},
    "leak": {"check_state_dict_keys_peft_format", "check_save_load_any_adapter_name",
             "check_adapter_names_substrings_do_not_leak"},
    "train": {"check_only_adapter_params_train"},
    "disable": {"check_disable_adapter_gives_base_output"},
    "nomerge": set(),  # correct, but declares no MERGE/UNLOAD/MULTI_ACTIVE: those checks do not apply
}


def method_name(bug: str | None) -> str:
    return f"TOY{(bug or 'ok').upper()}"


@dataclass
class ToyConfig(PeftConfig):
    r: int = 2
    alpha: float = 2.0
    target_modules: Optional[Union[list[str], set[str], str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"r must be a positive integer, got {self.r!r}.")


class ToyLayer(AdapterLayer):
    other_param_names = ("scale",)
    bug: ClassVar[str | None] = None

    def __init__(self, base_layer: nn.Module, description: Any) -> None:
        super().__init__(base_layer, description)
        for attr in self.adapter_layer_names:
            setattr(self, attr, nn.ModuleDict())

    def _pair(self, name: str) -> tuple[nn.Linear, nn.Linear]:
        down, up = self.adapter_layer_names
        return getattr(self, down)[name], getattr(self, up)[name]

    def update_layer(self, adapter_name: str, config: Any, **kwargs: Any) -> None:
        d = self.description
        down, up = nn.Linear(d.in_features, config.r, bias=False), nn.Linear(config.r, d.out_features, bias=False)
        nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        nn.init.zeros_(up.weight)
        getattr(self, self.adapter_layer_names[0])[adapter_name] = down
        getattr(self, self.adapter_layer_names[1])[adapter_name] = up
        self.scale[adapter_name] = config.alpha / config.r

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        down, up = self._pair(adapter_name)
        return result + (up(down(x.to(down.weight.dtype))) * self.scale[adapter_name]).to(result.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        down, up = self._pair(adapter_name)
        delta = (up.weight @ down.weight) * self.scale[adapter_name]
        return delta * 1.01 if self.bug == "merge" else delta  # bug: merge is 1% too strong

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        state = super().adapter_state_dict(adapter_name)
        if self.bug != "leak":
            return state
        # bug: the adapter name stays in the saved keys
        return {f"{k.split('.', 1)[0]}.{adapter_name}.{k.split('.', 1)[1]}": v for k, v in state.items()}

    def set_adapter(self, adapter_names: Any, trainable: dict[str, bool] | None = None) -> None:
        super().set_adapter(adapter_names, trainable)
        if self.bug == "train":
            self.base_layer.requires_grad_(True)  # bug: unfreezes the base layer

    def enable_adapters(self, enabled: bool) -> None:
        if self.bug == "disable":
            return  # bug: disabling is ignored
        super().enable_adapters(enabled)


class ToyPlugin:
    """An in-process plugin object providing one toy method."""

    def __init__(self, bug: str | None) -> None:
        self.bug = bug
        self.name = method_name(bug)
        prefix = f"{self.name.lower()}_"
        self.config_class = type(f"{self.name.title()}Config", (ToyConfig,), {
            "__annotations__": {"peft_type": Optional[str]}, "peft_type": self.name})
        self.config_class = dataclass(self.config_class)
        self.layer_class = type(f"{self.name.title()}Layer", (ToyLayer,), {
            "method": self.name, "bug": bug, "adapter_layer_names": (f"{prefix}down", f"{prefix}up")})
        self.prefix = prefix

    def _create(self, target: nn.Module, description: Any, config: Any, adapter_name: str, module_name: str = ""):
        layer = self.layer_class(target, description)
        layer.update_layer(adapter_name, config)
        return layer

    @hookimpl
    def peft_core_register_methods(self, registry: Any) -> None:
        caps = LAYER_METHOD_CAPABILITIES
        if self.bug == "nomerge":
            caps = caps - {Capability.MERGE, Capability.UNLOAD, Capability.MULTI_ACTIVE}
        registry.register(MethodSpec(name=self.name, config_class=self.config_class, prefix=self.prefix,
                                     layer_factory=self._create, capabilities=caps))

    @hookimpl
    def peft_core_conformance_cases(self, method: str) -> Any:
        if method != self.name:
            return None
        from hypothesis import strategies as st

        from peft_core.conformance import MethodCases

        targets = st.sets(st.sampled_from(["lin0", "lin1"]), min_size=1).map(sorted)
        return MethodCases(
            configs={"mlp": st.builds(self.config_class, r=st.integers(1, 3), target_modules=targets)},
            invalid_configs=st.sampled_from([{"r": 0}, {"r": -3}]),
        )


def install(bug: str | None) -> str:
    """Register the toy for ``bug`` (again, if it is there already); return its method name."""
    name = method_name(bug)
    uninstall(bug)
    register_plugin(ToyPlugin(bug), name=f"toy-{name.lower()}")
    assert name in registry()
    return name


def uninstall(bug: str | None) -> None:
    unregister_plugin(f"toy-{method_name(bug).lower()}")
