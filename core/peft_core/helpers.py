"""Small conveniences with Hugging Face PEFT's names: rescaling, signature copying, format sniffing."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from functools import update_wrapper
from types import FunctionType, MethodType
from typing import Any

from torch import nn

from .errors import ConfigError, MergeError, PeftCoreError, UnsupportedOperation
from .layer import AdapterLayer


@contextlib.contextmanager
def rescale_adapter_scale(model: nn.Module, multiplier: float) -> Iterator[None]:
    """Multiply every adapter's scale by ``multiplier`` inside the block; restore it after.

    Why: with a multiplier in [0, 1] this interpolates between the base and the fine-tuned
    model (WiSE-FT), which often helps under distribution shift — no retraining, no copy.
    It applies to layers of methods whose adapters are scaled by a number per adapter and
    expose it as ``layer.scaling`` (LoRA and its relatives); a model without any raises.
    Merged adapters are already baked into the weights, so rescaling them is refused.
    """
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
        raise ConfigError(f"multiplier must be a float or int, got {type(multiplier).__name__}.")
    layers = [m for m in model.modules() if isinstance(m, AdapterLayer) and isinstance(getattr(m, "scaling", None), dict)]
    if not layers:
        raise UnsupportedOperation(
            "rescale_adapter_scale needs adapter layers with a per-adapter scale (LoRA-style `scaling`); "
            "this model has none."
        )
    merged = [m for m in layers if m.merged]
    if merged:
        raise MergeError("adapters are merged into the base weights, where a scale cannot reach them; call unmerge_adapter() before rescaling.")
    saved = {m: dict(m.scaling) for m in layers}
    try:
        for m in layers:
            m.scaling = {name: value * multiplier for name, value in m.scaling.items()}
        yield
    finally:
        for m, scaling in saved.items():
            m.scaling = scaling


def check_if_peft_model(model_name_or_path: str | os.PathLike) -> bool:
    """Whether ``model_name_or_path`` is a local directory holding a readable adapter config.

    Never touches the network: a Hub id that is not a local path is simply ``False``.
    """
    from .config import PeftConfig

    try:
        if not os.path.isdir(model_name_or_path):
            return False
        PeftConfig.from_pretrained(model_name_or_path)
    except (PeftCoreError, OSError, ValueError, TypeError):
        return False
    return True


def _is_generic(signature: inspect.Signature) -> bool:
    """Only ``(*args, **kwargs)`` or ``(**kwargs)``: nothing a user or an IDE can read from it."""
    kinds = [p.kind for p in signature.parameters.values()]
    return kinds in ([inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD], [inspect.Parameter.VAR_KEYWORD]) or (
        set(signature.parameters) <= {"args", "kwargs", "adapter_names"} and inspect.Parameter.VAR_KEYWORD in kinds
    )


def _copy_signature(model: Any, method: str) -> None:
    bound = getattr(model, method)
    if not _is_generic(inspect.signature(bound)):
        return
    source = getattr(type(model.get_base_model()), method, None)
    if source is None:
        return
    original = bound.__func__
    # a fresh function object: copying (deepcopy returns functions as they are) would
    # change the class's method, and so every other model's signature, too
    function = FunctionType(original.__code__, original.__globals__, original.__name__,
                            original.__defaults__, original.__closure__)
    function.__kwdefaults__ = original.__kwdefaults__
    update_wrapper(function, source, assigned=("__doc__", "__name__", "__annotations__"))
    setattr(model, method, MethodType(function, model))


def update_forward_signature(model: nn.Module) -> None:
    """Give ``model.forward`` the base model's signature and docstring (for ``help()``, IDEs, Trainer's column check)."""
    _copy_signature(model, "forward")


def update_generate_signature(model: nn.Module) -> None:
    """Give ``model.generate`` the base model's signature and docstring; no-op without ``generate``."""
    if hasattr(model, "generate"):
        _copy_signature(model, "generate")


def update_signature(model: nn.Module, method: str = "all") -> None:
    """``update_forward_signature`` and/or ``update_generate_signature`` (``"forward"``, ``"generate"``, ``"all"``)."""
    if method not in ("forward", "generate", "all"):
        raise ConfigError(f"method must be 'forward', 'generate' or 'all', got {method!r}.")
    if method in ("forward", "all"):
        update_forward_signature(model)
    if method in ("generate", "all"):
        update_generate_signature(model)


__all__ = [
    "check_if_peft_model",
    "rescale_adapter_scale",
    "update_forward_signature",
    "update_generate_signature",
    "update_signature",
]