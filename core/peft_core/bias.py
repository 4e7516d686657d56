"""The ``bias`` option layer methods share (``"none"``, ``"all"``, ``"<method>_only"``): which base biases train.

PEFT's LoRA, VeRA, BOFT, … accept the same three values: no bias trains, every bias of the
model trains, or only the biases of the layers the method adapts. They are base-model
parameters, so the tuner trains and saves them through ``MethodSpec.extra_parameters``;
this function names them for any method.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .targeting import TargetMatcher, walk_modules

#: module paths inside which a bias is not the base model's own (adapter copies, modules_to_save)
_NOT_BASE = (".original_module.", ".modules_to_save.")


def trained_biases(model: nn.Module, config: Any, method: str, prefix: str) -> Iterable[str]:
    """Names (in ``model``) of the base biases ``config.bias`` trains for a ``method`` adapter.

    ``"all"``: every bias outside adapter tensors (names with a component starting with the
    method's ``prefix``) and outside modules_to_save copies (saved by their wrapper).
    ``"<something>_only"``: the ``base_layer.bias`` of the ``method`` layers this config targets
    (another adapter's layers are not this one's to save).
    """
    from .layer import AdapterLayer

    mode = getattr(config, "bias", "none")
    if mode == "all":
        return [
            n for n, _ in model.named_parameters()
            if n.rsplit(".", 1)[-1] == "bias" and not any(p.startswith(prefix) for p in n.split("."))
            and not any(w in f".{n}" for w in _NOT_BASE)
        ]
    if isinstance(mode, str) and mode.endswith("_only"):
        matcher = TargetMatcher(config, model)
        return [
            f"{name}.base_layer.bias"
            for name, module in walk_modules(model)
            if isinstance(module, AdapterLayer) and module.method == method
            and getattr(module.base_layer, "bias", None) is not None
            and matcher.targeted(name, module) and not matcher.excluded(name)
        ]
    return []
