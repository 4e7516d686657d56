"""Shared helpers for the reliability tests: a tiny LoRA model and a "nothing changed" snapshot."""

from __future__ import annotations

import torch
from torch import nn

from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import mlp

IDS = torch.tensor([[1, 5, 7, 2], [3, 3, 9, 0]])


def lora_config(**kwargs) -> LoraConfig:
    kwargs.setdefault("target_modules", ["lin0", "lin1"])
    kwargs.setdefault("r", 4)
    kwargs.setdefault("init_lora_weights", False)  # random factors: a loaded adapter changes outputs
    return LoraConfig(**kwargs)


def lora_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed + 100)
    return get_peft_model(mlp(), lora_config(**kwargs))


def snapshot(model: nn.Module) -> dict:
    """Everything a failed load must leave as it was: module objects, values, flags, adapters."""
    tuner = getattr(model, "base_model", None)
    peft_config = getattr(model, "peft_config", None) if hasattr(model, "base_model") else None
    return {
        "modules": [(n, id(m)) for n, m in model.named_modules()],
        "params": {n: (id(p), p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "active": getattr(tuner, "active_adapters", None) if peft_config is not None else None,
        "peft_config": {k: (id(v), v.to_dict()) for k, v in peft_config.items()} if peft_config else None,
        "training": model.training,
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"]
    assert set(after["params"]) == set(before["params"])
    for name, (pid, value, flag) in before["params"].items():
        now_id, now_value, now_flag = after["params"][name]
        assert now_id == pid, f"{name} was replaced"
        assert now_flag == flag, f"{name}.requires_grad changed"
        assert torch.equal(now_value, value), f"{name} changed value"
    assert set(after["buffers"]) == set(before["buffers"])
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value), name
    assert after["active"] == before["active"]
    assert after["peft_config"] == before["peft_config"]
    assert after["training"] == before["training"]
