"""The fast module-building helpers give what torch's own calls give, and step aside when they must."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_impl

from peft_core import LoraConfig, get_peft_model
from peft_core.modules import (autocast_enabled, fast_path, gc_paused, module_dict, new_module, set_child,
                                set_parameter)


def _state(module: nn.Module) -> dict:
    return {k: (type(v), v) for k, v in module.__dict__.items()}


def test_new_module_state_equals_nn_module_init() -> None:
    assert fast_path()
    built = new_module(nn.Linear, in_features=3, out_features=2)
    set_parameter(built, "weight", torch.ones(2, 3))
    set_parameter(built, "bias", None)
    real = nn.Linear(3, 2, bias=False)
    assert _state(built).keys() == _state(real).keys()
    assert [type(v) for v in built.__dict__.values()] == [type(real.__dict__[k]) for k in built.__dict__]
    assert built.state_dict().keys() == real.state_dict().keys()
    assert torch.equal(built(torch.ones(1, 3)), torch.full((1, 2), 3.0))


def test_fresh_containers_are_not_shared() -> None:
    a, b = module_dict(), module_dict()
    a.register_forward_hook(lambda *args: None)
    set_child(a, "x", nn.Identity())
    assert not b._forward_hooks and not b._modules


def test_registration_hooks_turn_the_fast_path_off_and_still_fire() -> None:
    seen: list[str] = []
    handle = module_impl.register_module_module_registration_hook(lambda mod, name, sub: seen.append(name))
    try:
        assert not fast_path()
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        seen.clear()
        get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
        assert "lora_A" in seen and "default" in seen  # every child went through torch's registration
    finally:
        handle.remove()
    assert fast_path()


def test_gc_paused_restores_the_collector_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("build failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a collector the caller had paused stays paused
    finally:
        gc.enable()


def test_a_finished_build_hands_its_objects_to_the_oldest_generation() -> None:
    cycle = _Node()
    cycle.me = cycle  # young garbage when the build starts
    ref = weakref.ref(cycle)
    del cycle
    with gc_paused():
        built = [[i] for i in range(20_000)]  # lists are always tracked (small dicts may not be)
    assert gc.get_count()[0] < 1_000  # the next allocation does not walk the 20k new objects
    oldest = {id(obj) for obj in gc.get_objects(generation=2)}
    assert all(id(obj) in oldest for obj in built[:: 997])
    assert ref() is not None
    gc.collect()
    assert ref() is None  # promoted with the rest, and still collected by a full collection


class _Node:
    me: object = None


def test_a_build_leaves_objects_the_program_froze_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gc_paused():
            built = [[i] for i in range(1_000)]
        # unfreeze would have emptied the permanent generation (a few frozen objects may die meanwhile)
        assert gc.get_freeze_count() > frozen // 2
        oldest = {id(obj) for obj in gc.get_objects(generation=2)}
        assert not any(id(obj) in oldest for obj in built)  # and the build was not promoted either
    finally:
        gc.unfreeze()


def test_injection_leaves_the_collector_running_after_a_failed_build() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(Exception):
        get_peft_model(model, LoraConfig(r=2, target_modules=["missing"]))
    assert gc.isenabled()


def test_autocast_enabled_knows_cpu_and_answers_false_for_meta():
    assert not autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_enabled("cpu")
        assert not autocast_enabled("meta")  # torch.is_autocast_enabled("meta") raises
