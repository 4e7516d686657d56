"""Building many small modules quickly: the state ``nn.Module.__init__`` gives, in one step.

Injecting an adapter builds several modules per targeted layer (the adapter layer, its
per-adapter ``ModuleDict``s, the factors). ``nn.Module.__init__`` sets its seventeen
attributes one call at a time and ``nn.Module.__setattr__`` checks every assignment
against parameters, buffers and submodules; on a model with thousands of small layers
those calls were the largest single cost of ``get_peft_model``. The helpers here give a
module exactly the state ``nn.Module.__init__`` would, in one dict display, and register
children and parameters straight into the dicts ``nn.Module`` keeps them in.

They fall back to the ordinary calls whenever that could differ from what torch does:
when global module/parameter registration hooks are installed (tools that materialise
modules on another device use them), or when the installed torch's fresh module is not
exactly the state written out here (checked at import against a real ``nn.Module()``).
"""

from __future__ import annotations

import contextlib
import gc
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.modules import module as _module_impl

M = TypeVar("M", bound=nn.Module)


def _fresh_state() -> dict[str, Any]:
    """The attributes ``nn.Module.__init__`` sets, as of torch 2.4 to 2.13, in one dict display."""
    return {
        "training": True, "_parameters": {}, "_buffers": {}, "_non_persistent_buffers_set": set(),
        "_backward_pre_hooks": OrderedDict(), "_backward_hooks": OrderedDict(), "_is_full_backward_hook": None,
        "_forward_hooks": OrderedDict(), "_forward_hooks_with_kwargs": OrderedDict(),
        "_forward_hooks_always_called": OrderedDict(), "_forward_pre_hooks": OrderedDict(),
        "_forward_pre_hooks_with_kwargs": OrderedDict(), "_state_dict_hooks": OrderedDict(),
        "_state_dict_pre_hooks": OrderedDict(), "_load_state_dict_pre_hooks": OrderedDict(),
        "_load_state_dict_post_hooks": OrderedDict(), "_modules": {},
    }


def _matches_torch() -> bool:
    """Whether :func:`_fresh_state` is exactly what the installed torch's ``nn.Module()`` holds."""
    real, ours = nn.Module().__dict__, _fresh_state()
    return real.keys() == ours.keys() and all(type(real[k]) is type(ours[k]) and real[k] == ours[k] for k in real)


_MODULE_HOOKS = getattr(_module_impl, "_global_module_registration_hooks", None)
_PARAMETER_HOOKS = getattr(_module_impl, "_global_parameter_registration_hooks", None)
_KNOWN_TORCH = _matches_torch() and isinstance(_MODULE_HOOKS, dict) and isinstance(_PARAMETER_HOOKS, dict)


def fast_path() -> bool:
    """Whether modules may be built by filling their state directly (see the module docstring)."""
    # the hook registries are dicts torch fills in place, so the ones bound at import stay current
    return _KNOWN_TORCH and not _MODULE_HOOKS and not _PARAMETER_HOOKS


def init_module_state(module: nn.Module) -> None:
    """What ``nn.Module.__init__(module)`` does, in one dict update when :func:`fast_path` allows."""
    if fast_path():
        module.__dict__.update(_fresh_state())
    else:
        nn.Module.__init__(module)


def new_module(cls: type[M], **attributes: Any) -> M:
    """An instance of ``cls`` with a fresh module state and plain ``attributes``, ``__init__`` not run.

    For module classes whose ``__init__`` only stores plain attributes and children
    (``ModuleDict()``, ``Identity``, ``Dropout``, ``Linear`` with its parameters set by the caller).
    """
    module = cls.__new__(cls)
    init_module_state(module)
    module.__dict__.update(attributes)
    return module


def set_child(parent: nn.Module, name: str, child: nn.Module) -> None:
    """``parent.name = child`` where ``name`` is free or already a child (a checked adapter name, a replaced layer).

    Not for names that are parameters, buffers or plain attributes of ``parent``: those
    need ``setattr``'s clean-up.
    """
    if fast_path():
        parent._modules[name] = child
    else:
        parent.add_module(name, child)


def set_parameter(module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
    """``module.name = nn.Parameter(tensor)`` (or None) on a fresh module."""
    param = None if tensor is None else nn.Parameter(tensor)
    if fast_path():
        module._parameters[name] = param
    else:
        module.register_parameter(name, param)


def module_dict() -> nn.ModuleDict:
    """An empty ``nn.ModuleDict``."""
    return new_module(nn.ModuleDict)  # ModuleDict() without modules is nn.Module.__init__ alone


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many long-lived modules are built.

    Every module brings about sixteen container objects the collector tracks, and all of
    them outlive the build. With the collector running, each few tens of thousands of new
    objects trigger a full collection that walks the whole heap (torch and transformers
    alone are some 200k objects): on a model of 3000 small layers, three full passes that
    cost more than building the layers. Paused, the objects get collected once, later,
    by the collector's own schedule; nothing is skipped, and the collector is re-enabled
    on exit (if it was enabled on entry) even when the build fails.

    A build that succeeds also hands its objects straight to the oldest generation. Left
    young, the first allocation after the build walks all of them (some 330k on that model:
    ~50 ms inside ``get_peft_model``), then walks them again one generation up, and counts
    them toward the next full collection (~0.3 s more of the user's next steps); they are
    model parts that live as long as the model, so those walks find nothing. Full
    collections still visit them. ``gc.freeze`` + ``gc.unfreeze`` is the standard library's
    constant-time way to move every tracked object into the oldest generation; it is
    skipped when the program keeps objects frozen itself, since ``unfreeze`` would thaw them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if was_enabled and not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
    finally:
        if was_enabled:
            gc.enable()


_GLOBAL_CALL_HOOKS = tuple(
    registry for registry in (getattr(_module_impl, name, None) for name in (
        "_global_backward_pre_hooks", "_global_backward_hooks", "_global_forward_hooks", "_global_forward_pre_hooks"))
    if isinstance(registry, dict)
)


def calls_forward_directly(module: nn.Module) -> bool:
    """Whether ``module(x)`` is just ``module.forward(x)``: no hooks of its own or global ones, no tracing.

    The test ``nn.Module.__call__`` itself makes before taking its fast path. An adapter
    layer that computes its base layer's product itself (to fuse the adapter into it) may
    do so only then: a hook (an offloading tool's, a profiler's) must see the call.
    """
    return not (module._backward_hooks or module._backward_pre_hooks or module._forward_hooks
                or module._forward_pre_hooks or any(_GLOBAL_CALL_HOOKS) or torch._C._get_tracing_state())


def autocast_enabled(device_type: str) -> bool:
    """Whether ``torch.autocast`` is on for ``device_type``; False for types autocast does not know (``meta``).

    ``torch.is_autocast_enabled`` raises for such device types, yet a forward on meta
    tensors (shape tracing) is a normal thing to run.
    """
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False
