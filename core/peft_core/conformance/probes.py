"""Looking inside a PeftModel the way the checks need: which tensors are the adapter's, snapshots, comparisons.

"Which tensors belong to adapter X" is answered from what the model would *save* for X
(:func:`peft_core.serialization.adapter_entries`), not from what a layer claims about itself:
a tensor that trains but is never saved, or is saved but never trains, is exactly the kind of
bug the suite exists to catch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layer import AdapterLayer
from ..serialization import adapter_entries, tuner_of
from ..wrappers import ModulesToSaveWrapper


def saved_tensors(model: nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """``disk key -> live tensor`` of one adapter (what ``save_pretrained`` writes for it)."""
    return {key: tensor for key, (_, tensor) in adapter_entries(tuner_of(model), adapter_name).items()}


def prompt_tensors(model: nn.Module, adapter_name: str) -> list[torch.Tensor]:
    """Parameters of ``adapter_name``'s prompt encoder (prompt-learning methods), in a fixed order.

    A reparameterized prompt (P-tuning's MLP, prefix tuning's projection) trains more tensors
    than it saves: only the materialized prompt is written, as Hugging Face PEFT does.
    """
    encoders = getattr(tuner_of(model), "prompt_encoder", None)
    if encoders is None or adapter_name not in encoders:
        return []
    return [p for _, p in sorted(encoders[adapter_name].named_parameters())]


def own_tensors(model: nn.Module, adapter_name: str) -> list[torch.Tensor]:
    """Tensors only ``adapter_name`` owns: its layer tensors, prompt encoder and modules_to_save copies (no shared biases)."""
    out: list[torch.Tensor] = list(prompt_tensors(model, adapter_name))
    for _, module in tuner_of(model).adapter_modules():
        if isinstance(module, AdapterLayer):
            out.extend(module.adapter_state_dict(adapter_name).values())
        elif isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
            out.extend(module.modules_to_save[adapter_name].state_dict(keep_vars=True).values())
    out.extend(tensor for _, tensor in tuner_of(model).tuner_entries(adapter_name).values())  # held by the tuner itself
    return out


def adapter_modules_in(model: nn.Module) -> list[str]:
    """Names of adapter layers and modules_to_save wrappers anywhere in ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, (AdapterLayer, ModulesToSaveWrapper))]


def base_parameters(model: nn.Module, exclude: set[int] = frozenset()) -> dict[str, torch.Tensor]:
    """Clones of every parameter and buffer that belongs to no adapter (the frozen base).

    Base tensors a method trains on purpose (LoRA's ``bias="all"``) count as base here
    unless their ``id`` is in ``exclude``.
    """
    tuner = tuner_of(model)
    owned = {id(t) for name in tuner.peft_config for t in own_tensors(model, name)} | set(exclude)
    state = tuner.model.state_dict(keep_vars=True)
    return {k: v.detach().clone() for k, v in state.items() if id(v) not in owned}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max()) if a.numel() else 0.0


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float, rtol: float) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}")
    a, e = actual.detach().float(), expected.detach().float()
    if not torch.allclose(a, e, atol=atol, rtol=rtol, equal_nan=False):
        raise AssertionError(f"{what} (max abs difference {max_diff(a, e):.3g}, atol={atol}, rtol={rtol})")


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    if actual.shape != expected.shape or not torch.equal(actual, expected):
        diff = max_diff(actual, expected) if actual.shape == expected.shape else "shapes differ"
        raise AssertionError(f"{what} (max abs difference {diff})")


def assert_differs(actual: torch.Tensor, other: torch.Tensor, what: str) -> None:
    if actual.shape == other.shape and torch.equal(actual, other):
        raise AssertionError(what)


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str,
                        atol: float = 0.0, rtol: float = 0.0) -> None:
    """Same keys, and tensors equal (or close, with tolerances)."""
    if set(actual) != set(expected):
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        raise AssertionError(f"{what}: keys differ; missing {missing[:5]}, extra {extra[:5]}")
    for key in expected:
        if atol == 0 and rtol == 0:
            assert_equal(actual[key], expected[key], f"{what}: {key}")
        else:
            assert_close(actual[key], expected[key], f"{what}: {key}", atol, rtol)


def fixed_loss(output: torch.Tensor, seed: int) -> torch.Tensor:
    """Mean squared distance to a seeded random target: the same loss before and after training."""
    target = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed)).to(output.dtype)
    return (output - target).pow(2).mean()


def train_steps(case: Any, model: nn.Module, steps: int = 3, lr: float = 1e-3) -> list[float]:
    """A few Adam steps on :func:`fixed_loss` (eval mode: no dropout noise); the losses seen."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AssertionError("the model has no trainable parameters after adding an adapter")
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = fixed_loss(case.output_with_grad(model), case.seed)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(fixed_loss(case.output_with_grad(model), case.seed)))
    return losses
