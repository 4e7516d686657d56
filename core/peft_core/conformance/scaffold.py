"""``peft-core new-method NAME``: write a complete method plugin that passes the suite as generated.

The generated method is deliberately the smallest useful one — an additive low-rank update
on linear layers — so a researcher starts from something that installs, is found by entry
point and passes every conformance check, and changes the math in ``layer.py`` from there.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from .cases import ConformanceError

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "peft-core-$dist"
version = "0.1.0"
description = "$NAME: a parameter-efficient fine-tuning method for peft-core"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["peft-core>=0.1", "torch>=2.4"]

[project.optional-dependencies]
test = ["pytest>=8", "hypothesis>=6.100"]

[project.entry-points.peft_core]
$name = "peft_core_$name.plugin"

[tool.setuptools.packages.find]
include = ["peft_core_$name*"]
'''

_README = '''\
# peft-core-$dist

The `$NAME` method for [peft-core](https://github.com/): an additive low-rank update
`W x + (alpha / r) · up(down(x))` on linear layers, ready to be replaced by your idea.

```bash
pip install -e .
peft-core methods                 # $NAME is listed
peft-core conformance $NAME       # the shared suite, as a table
pytest tests                      # the same suite under pytest
```

```python
from peft_core import get_peft_model
from peft_core_$name import ${Name}Config

model = get_peft_model(model, ${Name}Config(r=8, target_modules=["q_proj", "v_proj"]))
```

Files: `config.py` (the config dataclass, validated in `__post_init__`), `layer.py` (the
adapter layer: parameters, forward, delta weight for merging), `plugin.py` (registers the
method and its capabilities), `conformance.py` (configs the suite draws).
'''

_INIT = '''\
"""$NAME for peft-core."""

from .config import ${Name}Config
from .layer import ${Name}Layer

__all__ = ["${Name}Config", "${Name}Layer"]
'''

_CONFIG = '''\
"""``${Name}Config``: what a $NAME adapter is made of; checked when it is created."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from peft_core import ConfigError, PeftConfig


@dataclass
class ${Name}Config(PeftConfig):
    """$NAME: ``W x + (alpha / r) · up(down(x))`` on the targeted linear layers."""

    peft_type: Optional[str] = "$NAME"
    r: int = 8
    alpha: float = 8.0
    target_modules: Optional[Union[list[str], set[str], str]] = None
    exclude_modules: Optional[Union[list[str], set[str], str]] = None
    modules_to_save: Optional[list[str]] = None

    #: base layer kinds this method can wrap (see peft_core.weights)
    supported_layer_kinds: ClassVar[tuple[str, ...]] = ("linear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "$NAME"
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = set(self.target_modules)
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"r must be a positive integer (the rank of the update), got {self.r!r}.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ConfigError(f"alpha must be a number (the update is scaled by alpha / r), got {self.alpha!r}.")
'''

_LAYER = '''\
"""The $NAME adapter layer: parameters per adapter, how they change the output, and the weight delta.

Bookkeeping (active/merged adapters, disabling, deleting, mixed batches, merging through
the weight hooks) is inherited from ``peft_core.AdapterLayer``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from peft_core import AdapterLayer


class ${Name}Layer(AdapterLayer):
    method = "$NAME"
    # attribute names start with the method prefix "$prefix": saved keys say which method owns them
    adapter_layer_names = ("${prefix}down", "${prefix}up")
    other_param_names = ("${prefix}scaling",)

    def __init__(self, base_layer: nn.Module, description: Any) -> None:
        super().__init__(base_layer, description)
        self.${prefix}down, self.${prefix}up = nn.ModuleDict(), nn.ModuleDict()

    def update_layer(self, adapter_name: str, config: Any, **kwargs: Any) -> None:
        d = self.description
        down = nn.Linear(d.in_features, config.r, bias=False)
        up = nn.Linear(config.r, d.out_features, bias=False)
        nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        nn.init.zeros_(up.weight)  # a new adapter starts as the identity
        self.${prefix}down[adapter_name], self.${prefix}up[adapter_name] = down, up
        self.${prefix}scaling[adapter_name] = config.alpha / config.r

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        down, up = self.${prefix}down[adapter_name], self.${prefix}up[adapter_name]
        update = up(down(x.to(down.weight.dtype))) * self.${prefix}scaling[adapter_name]
        return result + update.to(result.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        down, up = self.${prefix}down[adapter_name].weight, self.${prefix}up[adapter_name].weight
        return (up @ down) * self.${prefix}scaling[adapter_name]


def create_layer(target: nn.Module, description: Any, config: Any, adapter_name: str, module_name: str = "") -> ${Name}Layer:
    """The MethodSpec.layer_factory: wrap ``target`` and add the first adapter."""
    layer = ${Name}Layer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
'''

_PLUGIN = '''\
"""The $NAME plugin (entry point ``peft_core: $name``): registers the method with peft-core."""

from __future__ import annotations

from peft_core import MethodSpec, hookimpl
from peft_core.registry import LAYER_METHOD_CAPABILITIES

from .config import ${Name}Config
from .conformance import peft_core_conformance_cases  # noqa: F401  (hook implementation)
from .layer import create_layer


@hookimpl
def peft_core_register_methods(registry):
    registry.register(
        MethodSpec(
            name="$NAME",
            config_class=${Name}Config,
            prefix="$prefix",
            layer_factory=create_layer,
            capabilities=LAYER_METHOD_CAPABILITIES,
            description="$NAME: an additive low-rank update (replace with your method).",
        )
    )
'''

_CONFORMANCE = '''\
"""Configs the shared conformance suite draws for $NAME (Hypothesis is imported only when asked)."""

from __future__ import annotations

from peft_core import hookimpl

TARGETS = {
    "mlp": ["lin0", "lin1"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_bert": ["query", "key", "value"],
}


@hookimpl
def peft_core_conformance_cases(method):
    if method != "$NAME":
        return None
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    from .config import ${Name}Config

    def configs(names):
        return st.builds(
            ${Name}Config,
            r=st.integers(1, 4),
            alpha=st.sampled_from([1.0, 4.0, 8.0]),
            target_modules=st.sets(st.sampled_from(names), min_size=1).map(sorted),
        )

    return MethodCases(
        configs={kind: configs(names) for kind, names in TARGETS.items()},
        invalid_configs=st.sampled_from([{"r": 0}, {"r": -1}, {"r": 1.5}, {"alpha": "big"}]),
    )
'''

_TEST = '''\
from peft_core.conformance import parametrize_with_checks


@parametrize_with_checks("$NAME")
def test_conformance(check):
    check()
'''

FILES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "peft_core_$name/__init__.py": _INIT,
    "peft_core_$name/config.py": _CONFIG,
    "peft_core_$name/layer.py": _LAYER,
    "peft_core_$name/plugin.py": _PLUGIN,
    "peft_core_$name/conformance.py": _CONFORMANCE,
    "tests/test_conformance.py": _TEST,
}


def plugin_names(name: str) -> dict[str, str]:
    """``name`` → the identifiers the package uses, or a clear error for unusable names."""
    name = name.strip().lower().replace("-", "_")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name) or name.endswith("_"):
        raise ConformanceError(f"method name {name!r} must be letters, digits and '_' (a Python identifier), "
                               "starting with a letter, e.g. 'mymethod'.")
    from ..plugins import registry

    if name.upper() in registry():
        raise ConformanceError(f"a method named {name.upper()!r} is already installed; pick another name.")
    return {"name": name, "NAME": name.upper(), "Name": "".join(p.title() for p in name.split("_")),
            "prefix": f"{name}_", "dist": name.replace("_", "-")}


def write_plugin(name: str, directory: Path, force: bool = False) -> Path:
    """Write ``directory/peft-core-<name>/`` and return it."""
    values = plugin_names(name)
    root = Path(directory) / f"peft-core-{values['dist']}"
    if root.exists() and not force:
        raise ConformanceError(f"{root} already exists; pass --force to overwrite it or choose another --dir.")
    for rel, text in FILES.items():
        path = root / Template(rel).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
    return root
