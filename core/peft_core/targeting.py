"""Which modules an adapter goes into: Hugging Face PEFT's ``target_modules`` rules.

The rules are compiled once into a :class:`TargetMatcher` and applied in ONE walk over the
model (no per-module regex rebuilds, no quadratic suffix search):

* a **list** entry matches a module whose full name equals it or ends with ``.entry``;
  with ``layers_to_transform`` (+ ``layers_pattern``) a suffix match also needs the layer
  index to be listed (an exact full-name match is taken as is);
* a **string** is a regular expression that must match the full name (``re.fullmatch``);
* ``"all-linear"`` is every linear layer (``nn.Linear``, ``Conv1D``, quantized linears)
  except the output head;
* ``exclude_modules`` (same list/regex forms) and ``modules_to_save`` names are never
  targeted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from .errors import ConfigError, TargetModulesError

ALL_LINEAR = "all-linear"
#: classifier heads of sequence classification models, never targeted by "all-linear"
SEQ_CLS_HEAD_NAMES = ("score", "classifier")


def walk_modules(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Like ``named_modules()``, but does not descend into adapter layers or wrappers.

    What is inside an adapter layer (its base layer, its ``lora_A`` …) is the adapter's
    business and must never become a target itself.
    """
    from .layer import AdapterLayer
    from .wrappers import ModulesToSaveWrapper

    stack = [(prefix, model)]
    while stack:
        name, module = stack.pop()
        yield name, module
        if isinstance(module, (AdapterLayer, ModulesToSaveWrapper)):
            continue
        children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items() if m is not None]
        stack.extend(reversed(children))


def _suffixes(name: str) -> Iterator[str]:
    """``"a.b.c"`` → ``"a.b.c"``, ``"b.c"``, ``"c"``."""
    yield name
    start = name.find(".")
    while start != -1:
        yield name[start + 1 :]
        start = name.find(".", start + 1)


class _NameRule:
    """A list-or-regex rule (``target_modules``, ``exclude_modules``) compiled once."""

    def __init__(self, rule: str | Sequence[str] | None) -> None:
        self.regex = re.compile(rule) if isinstance(rule, str) else None
        self.names = frozenset(rule) if rule is not None and not isinstance(rule, str) else frozenset()

    def exact(self, name: str) -> bool:
        return name in self.names

    def matches(self, name: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(name) is not None
        return any(s in self.names for s in _suffixes(name))


class TargetMatcher:
    """The compiled target rules of one config."""

    def __init__(self, config: Any, model: nn.Module) -> None:
        targets = getattr(config, "target_modules", None)
        self.all_linear = isinstance(targets, str) and targets.lower() == ALL_LINEAR
        self.target = None if self.all_linear else _NameRule(targets)
        self.exclude = _NameRule(getattr(config, "exclude_modules", None) or None)
        self.has_exclude = bool(getattr(config, "exclude_modules", None))
        layers = getattr(config, "layers_to_transform", None)
        self.layers: set[int] | None = None
        if layers is not None and not (isinstance(layers, list) and len(layers) == 0):
            self.layers = {layers} if isinstance(layers, int) else set(layers)
        pattern = getattr(config, "layers_pattern", None)
        if isinstance(pattern, str):
            pattern = [pattern]
        if pattern:
            self.layer_regexes = [re.compile(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.") for p in pattern]
        else:  # the first numbered segment after some container name
            self.layer_regexes = [re.compile(r".*?\.[^.]*\.(?P<idx>\d+)\.")]
        saved = getattr(config, "modules_to_save", None) or []
        self.saved = frozenset(saved)
        self.head_names = _head_names(model, config) if self.all_linear else set()
        #: descriptions "all-linear" matching computed, by ``id(module)``: injection reuses them
        self.described: dict[int, Any] = {}

    def _layer_ok(self, name: str) -> bool:
        for regex in self.layer_regexes:
            match = regex.match(name)
            if match is not None:
                return int(match.group("idx")) in self.layers  # type: ignore[operator]
        return False

    def is_saved_module(self, name: str) -> bool:
        return bool(self.saved) and any(part in self.saved for part in _dotted_runs(name))

    def excluded(self, name: str) -> bool:
        return (self.has_exclude and self.exclude.matches(name)) or self.is_saved_module(name)

    def targeted(self, name: str, module: nn.Module) -> bool:
        """Does the target rule (ignoring exclusions) select this module?"""
        if self.all_linear:
            return name not in self.head_names and self._is_linear(module)
        assert self.target is not None
        if self.target.regex is not None:
            return self.target.matches(name)
        if self.target.exact(name):
            return True
        if not self.target.matches(name):
            return False
        return self.layers is None or self._layer_ok(name)

    def _is_linear(self, module: nn.Module) -> bool:
        from .layer import AdapterLayer
        from .weights import LINEAR, describe_layer

        if isinstance(module, AdapterLayer):
            return module.description.kind == LINEAR
        if not hasattr(module, "weight"):
            return False
        desc = self.described[id(module)] = describe_layer(module)
        return desc is not None and desc.kind == LINEAR


def _dotted_runs(name: str) -> Iterator[str]:
    """Every run of consecutive dotted components: what ``(^|.*\\.)m($|\\..*)`` can match."""
    parts = name.split(".")
    for i in range(len(parts)):
        for j in range(i + 1, len(parts) + 1):
            yield ".".join(parts[i:j])


def _head_names(model: nn.Module, config: Any) -> set[str]:
    heads: list[nn.Module] = []
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        try:
            out = get_out()
        except (AttributeError, NotImplementedError):
            out = None
        if out is not None:
            heads.append(out)
    if not heads and str(getattr(config, "task_type", None)) == "SEQ_CLS":
        heads.extend(m for n in SEQ_CLS_HEAD_NAMES if isinstance(m := getattr(model, n, None), nn.Module))
    if not heads:
        return set()
    ids = {id(h) for h in heads}
    # walk_modules: a head is never inside an adapter layer's own modules, and named_modules()
    # would visit every loaded adapter's factors (a cost growing with each load_adapter)
    return {name for name, module in walk_modules(model) if id(module) in ids}


def find_targets(model: nn.Module, config: Any) -> list[str]:
    """Names of the modules ``config`` targets, in model order; a clear error if none.

    One walk over the model; modules inside adapter layers are never considered.
    """
    return [name for name, _ in find_target_modules(model, config, TargetMatcher(config, model))]


def find_target_modules(model: nn.Module, config: Any, matcher: TargetMatcher) -> list[tuple[str, nn.Module]]:
    """:func:`find_targets` with the modules (and ``matcher.described`` filled for "all-linear")."""
    found: list[tuple[str, nn.Module]] = []
    excluded = 0
    names: list[str] = []
    for name, module in walk_modules(model):
        if not name:
            continue
        names.append(name)
        if not matcher.targeted(name, module):
            continue
        if matcher.excluded(name):
            excluded += 1
            continue
        found.append((name, module))
    if not found:
        raise TargetModulesError(_no_match_message(config, names, excluded))
    return found


def _no_match_message(config: Any, names: list[str], excluded: int) -> str:
    targets = getattr(config, "target_modules", None)
    if excluded:
        return (
            f"every module matched by target_modules={targets!r} is excluded by exclude_modules or "
            "modules_to_save; loosen the exclusions or change target_modules."
        )
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    wanted = [targets] if isinstance(targets, str) else list(targets or [])
    close: list[str] = []
    for want in wanted:
        close += difflib.get_close_matches(str(want).rsplit(".", 1)[-1], leaves, n=3, cutoff=0.5)
        close += difflib.get_close_matches(str(want), names, n=2, cutoff=0.6)
    close = list(dict.fromkeys(close))
    hint = f" Close module names: {', '.join(close)}." if close else ""
    layers = getattr(config, "layers_to_transform", None)
    extra = f" (with layers_to_transform={layers!r}, layers_pattern={getattr(config, 'layers_pattern', None)!r})" if layers is not None else ""
    sample = ", ".join(leaves[:12]) + (" …" if len(leaves) > 12 else "")
    return (
        f"target_modules={targets!r}{extra} matched no module of the model.{hint} "
        f"Module name endings in this model: {sample}."
    )


def pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """The ``rank_pattern``/``alpha_pattern`` value for module ``name``: first key matching ``(.*\\.)?key$``."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", name):
            return patterns[key]
    return default


def check_target_fields(config: Any, name_fields: Sequence[str] = ("target_modules", "exclude_modules")) -> None:
    """Normalise and validate the module-selection fields every layer method's config shares.

    Called from each method config's ``__post_init__`` so the rules are the same for every
    method: lists become sets (as PEFT stores them), entries must be module names or a valid
    regex, and ``layers_to_transform``/``layers_pattern`` only go with a list of targets.
    """
    for name in name_fields:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple, frozenset)):
            value = set(value)
            setattr(config, name, value)
        if value is not None and not isinstance(value, (str, set)):
            raise ConfigError(f"{name} must be a list of module names or a regex string, got {value!r}.")
        if isinstance(value, set) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must contain module names (strings), got {sorted(map(repr, value))}.")
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(f"{name} {value!r} is not a valid regular expression: {exc}.") from None
    targets = getattr(config, "target_modules", None)
    layers = getattr(config, "layers_to_transform", None)
    pattern = getattr(config, "layers_pattern", None)
    if isinstance(targets, str) and layers is not None:
        raise ConfigError("layers_to_transform only works with a list of target_modules, not a regex string.")
    if isinstance(targets, str) and pattern is not None:
        raise ConfigError("layers_pattern only works with a list of target_modules, not a regex string.")
    if pattern and layers is None:
        raise ConfigError("layers_pattern is only used together with layers_to_transform; set both or neither.")
    if layers is not None and not (
        (isinstance(layers, int) and not isinstance(layers, bool))
        or (isinstance(layers, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in layers))
    ):
        raise ConfigError(f"layers_to_transform must be a layer index or a list of them, got {layers!r}.")
