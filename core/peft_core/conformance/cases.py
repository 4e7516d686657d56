"""What a method contributes to the suite (:class:`MethodCases`) and what one check receives (:class:`Case`).

A method plugin answers the ``peft_core_conformance_cases(method)`` hook with a
:class:`MethodCases`: Hypothesis strategies of valid configs per tiny-model kind, and of
invalid config arguments. The suite turns them into :class:`Case` objects — a config, a
second config, a model kind, an input batch, adapter names and seeds — and every check
works from a case alone, so any method (ours or a third party's) is tested the same way.

Checks need adapters that actually *do* something (a fresh LoRA adapter is the identity,
which would make "merge gives the same output" vacuous), so :meth:`Case.peft` perturbs every
new adapter's trainable tensors with seeded noise unless asked not to.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import PeftCoreError
from ..registry import MethodSpec

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from ..config import PeftConfig
    from ..model import PeftModel


class ConformanceError(PeftCoreError):
    """The suite cannot run for a method: no cases, unknown model kind, unknown check name."""


def _always(config: Any) -> bool:
    return True


@dataclass(frozen=True)
class MethodCases:
    """A method's contribution to the conformance suite.

    ``configs`` maps a model kind (see ``strategies.MODEL_KINDS``) to a strategy of valid
    configs for that model; only those kinds are tested. ``invalid_configs`` draws keyword
    arguments for the method's config class that must be refused with a
    :class:`~peft_core.errors.PeftCoreError` (when constructing the config or adding the
    adapter). ``identity_at_init(config)`` says whether a config promises an adapter that
    starts as the identity (LoRA with ``init_lora_weights=False`` does not).
    ``perturb(layer, adapter_name, generator, scale)`` replaces the default "add seeded noise
    to every trainable tensor" for methods whose parameters must keep a structure.
    ``atol``/``rtol`` bound what merging may change numerically in fp32. ``notes`` explain
    capabilities and known limits (shown by ``peft-core conformance``).
    """

    configs: Mapping[str, SearchStrategy[PeftConfig]]
    invalid_configs: SearchStrategy[dict[str, Any]] | None = None
    identity_at_init: Callable[[PeftConfig], bool] = _always
    perturb: Callable[[nn.Module, str, torch.Generator, float], None] | None = None
    perturb_scale: float = 0.1
    atol: float = 1e-4
    rtol: float = 1e-4
    notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self.configs))


def cases_for(method: str) -> MethodCases:
    """The :class:`MethodCases` the plugin of ``method`` provides, or a clear error."""
    from ..plugins import hook, registry
    from .strategies import MODEL_KINDS

    spec = registry().get(method)
    found = hook().peft_core_conformance_cases(method=spec.name)
    if found is None:
        raise ConformanceError(
            f"plugin {spec.plugin_name!r} provides no conformance cases for {spec.name}; implement the "
            "peft_core_conformance_cases(method) hook and return a peft_core.conformance.MethodCases."
        )
    if not isinstance(found, MethodCases):
        raise ConformanceError(
            f"peft_core_conformance_cases for {spec.name} returned {type(found).__name__}, not a MethodCases."
        )
    unknown = sorted(set(found.configs) - set(MODEL_KINDS))
    if unknown or not found.configs:
        raise ConformanceError(
            f"MethodCases of {spec.name} names unknown model kinds {unknown} (known: {sorted(MODEL_KINDS)})"
            if unknown else f"MethodCases of {spec.name} has no configs; give at least one model kind."
        )
    return _with_derived_kinds(spec, found)


def _with_derived_kinds(spec: MethodSpec, found: MethodCases) -> MethodCases:
    """Add the backend-contributed kinds (quantized models) the method qualifies for, with its float-kind configs."""
    from dataclasses import replace

    from .strategies import MODEL_KINDS, all_model_kinds

    extra = {
        kind.name: found.configs[kind.derived_from]
        for kind in all_model_kinds().values()
        if kind.name not in MODEL_KINDS and kind.derived_from in found.configs
        and (kind.requires is None or spec.supports(kind.requires))
    }
    return replace(found, configs={**found.configs, **extra}) if extra else found


@dataclass
class Case:
    """One drawn example: everything a check needs to build models and compare outputs.

    ``config`` and ``other_config`` are templates; use :meth:`new_config` (a fresh deep copy)
    because adding an adapter may fill in fields of the config it is given.
    """

    spec: MethodSpec = field(repr=False)
    cases: MethodCases = field(repr=False)
    kind: str
    config: PeftConfig
    other_config: PeftConfig
    inputs: dict[str, torch.Tensor]
    names: tuple[str, str]
    routing: list[str]
    seed: int
    invalid: dict[str, Any] | None = None

    def __repr__(self) -> str:  # what Hypothesis prints for a falsifying example
        shapes = {k: tuple(v.shape) for k, v in self.inputs.items()}
        return (f"Case(method={self.spec.name}, kind={self.kind!r}, config={self.config!r}, "
                f"other_config={self.other_config!r}, inputs={shapes}, names={self.names}, "
                f"routing={self.routing}, seed={self.seed}, invalid={self.invalid!r})")

    @property
    def batch_size(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def new_config(self, second: bool = False) -> PeftConfig:
        return copy.deepcopy(self.other_config if second else self.config)

    def base(self) -> nn.Module:
        """A pristine copy of the case's tiny model, frozen like a PeftModel's base.

        Frozen because PyTorch picks different CPU kernels when weights require gradients,
        and those differ in the last bit: "exactly the base output" must compare like with like.
        """
        from .strategies import fresh_model

        return fresh_model(self.kind).requires_grad_(False)

    def run(self, model: nn.Module, inputs: Mapping[str, torch.Tensor] | None = None, **kwargs: Any) -> torch.Tensor:
        """The model's output tensor for the case's inputs, without gradients."""
        with torch.no_grad():
            out = model(**dict(inputs if inputs is not None else self.inputs), **kwargs)
        return self.model_kind.output(out)

    def output_with_grad(self, model: nn.Module) -> torch.Tensor:
        return self.model_kind.output(model(**self.inputs))

    @property
    def model_kind(self) -> Any:
        from .strategies import model_kind

        return model_kind(self.kind)

    def peft(
        self,
        adapters: Sequence[tuple[str, bool]] | None = None,
        perturb: bool = True,
        model: nn.Module | None = None,
        autocast_adapter_dtype: bool = True,
    ) -> PeftModel:
        """A PeftModel with ``adapters`` = ``[(name, second_config?), ...]`` (default: the first name).

        Each adapter is created right after seeding torch with a seed derived from the case
        and the adapter's name, and (with ``perturb``) then moved off its initial value, so an
        adapter comes out bit-identical whether it is built alone or next to others.
        """
        from ..model import get_peft_model

        adapters = list(adapters or [(self.names[0], False)])
        base = model if model is not None else self.base()
        peft_model = None
        for name, second in adapters:
            seed = self.adapter_seed(name)
            torch.manual_seed(seed)
            if peft_model is None:
                peft_model = get_peft_model(base, self.new_config(second), adapter_name=name,
                                            autocast_adapter_dtype=autocast_adapter_dtype)
            else:
                peft_model.add_adapter(name, self.new_config(second))
            if perturb:
                self.perturb(peft_model, name, seed + 1)
        assert peft_model is not None
        peft_model.eval()
        return peft_model

    def adapter_seed(self, name: str) -> int:
        return self.seed + zlib.crc32(name.encode()) % 100_003

    def perturb(self, peft_model: nn.Module, adapter_name: str, seed: int) -> None:
        """Move one adapter's trainable tensors off their initial values (seeded)."""
        from .probes import prompt_tensors

        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # a prompt encoder (prompt-learning methods) is moved off its init too
            for param in prompt_tensors(peft_model, adapter_name):
                param.add_((torch.randn(param.shape, generator=gen) * self.cases.perturb_scale).to(param.dtype))
        for _, layer in sorted(adapter_layers(peft_model), key=lambda item: item[0]):
            if not layer.has_adapter(adapter_name):
                continue
            if self.cases.perturb is not None:
                self.cases.perturb(layer, adapter_name, gen, self.cases.perturb_scale)
                continue
            with torch.no_grad():
                for param in layer.adapter_parameters(adapter_name):
                    noise = torch.randn(param.shape, generator=gen) * self.cases.perturb_scale
                    param.add_(noise.to(param.dtype))


def adapter_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """``(path, AdapterLayer)`` pairs of a PeftModel (or tuner), outermost first."""
    from ..serialization import tuner_of

    return list(tuner_of(model).adapter_layers())
