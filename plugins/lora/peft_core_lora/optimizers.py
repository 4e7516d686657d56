"""Optimizers made for LoRA: LoRA+ (a larger learning rate for B) and LoRA-FA (frozen A, projected B).

* **LoRA+** (Hayou et al., 2024, https://arxiv.org/abs/2402.12354): with A and B trained at
  one learning rate, B learns too slowly in wide models; giving B ``lr · loraplus_lr_ratio``
  fixes it. :func:`create_loraplus_optimizer` builds PEFT's four parameter groups (A, LoRA
  embeddings, B with and without weight decay) around any optimizer class.
* **LoRA-FA** (Zhang et al., 2023, https://arxiv.org/abs/2308.03303): A stays at its random
  initialisation and only B trains, which removes A's activations from the memory of the
  backward pass. B's gradient is projected with ``(A Aᵀ)⁻¹ / s²`` (``s`` the layer's
  scaling) so that the update of the product ``s·B A`` follows the full-gradient direction as
  closely as a B-only step can. :class:`LoraFAOptimizer` is AdamW ("adamw-hf" flavour:
  decoupled decay applied after the step) with that projection.

Both are exported by the LoRA plugin: ``from peft_core import create_loraplus_optimizer``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from peft_core.errors import ConfigError, UnsupportedOperation

from .layer import LoraEmbedding, LoraLayer

#: optimizers from bitsandbytes whose embedding states PEFT keeps in 32 bits
EIGHT_BIT_OPTIMIZERS = ("Adam8bit", "AdamW8bit", "PagedAdam8bit", "PagedAdamW8bit")


def _lora_layers(model: nn.Module) -> Iterator[LoraLayer]:
    return (m for m in model.modules() if isinstance(m, LoraLayer))


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters that get no weight decay (transformers' Trainer rule): biases and LayerNorm parameters."""
    ids = {id(p) for name, p in model.named_parameters() if "bias" in name}
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            ids.update(id(p) for p in module.parameters())
    return ids


def loraplus_parameter_groups(model: nn.Module) -> dict[str, dict[str, nn.Parameter]]:
    """Trainable parameters by LoRA+ role: ``groupA``, ``embedding``, ``groupB``, ``groupB_no_decay``.

    LoRA embedding factors form their own group; ``lora_B`` tensors and 1-D tensors (biases,
    DoRA magnitudes) are the "B side"; every other trainable tensor (``lora_A``, trained
    copies of modules) is the "A side".
    """
    embedding_ids = {id(p) for layer in _lora_layers(model) if isinstance(layer, LoraEmbedding)
                     for attr in ("lora_embedding_A", "lora_embedding_B") for p in getattr(layer, attr).values()}
    no_decay = _no_decay_ids(model)
    groups: dict[str, dict[str, nn.Parameter]] = {"groupA": {}, "embedding": {}, "groupB": {}, "groupB_no_decay": {}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in embedding_ids:
            groups["embedding"][name] = param
        elif "lora_B" in name or param.ndim == 1:
            groups["groupB_no_decay" if id(param) in no_decay else "groupB"][name] = param
        else:
            groups["groupA"][name] = param
    return groups


def create_loraplus_optimizer(
    model: nn.Module,
    optimizer_cls: type[Optimizer],
    *,
    lr: float,
    loraplus_lr_ratio: float,
    loraplus_lr_embedding: float = 1e-6,
    loraplus_weight_decay: float = 0.0,
    **kwargs: Any,
) -> Optimizer:
    """An ``optimizer_cls`` whose B matrices learn ``loraplus_lr_ratio`` times faster than A (LoRA+).

    ``lr`` is A's learning rate; LoRA embedding factors use ``loraplus_lr_embedding``. Weight
    decay is ``loraplus_weight_decay`` except for biases and LayerNorm parameters on the B side.
    Other ``kwargs`` go to ``optimizer_cls`` (a ``weight_decay`` there is overridden per group,
    as in PEFT). Same groups, learning rates and decay as ``peft.optimizers.create_loraplus_optimizer``.
    """
    if loraplus_lr_ratio <= 0:
        raise ConfigError(f"loraplus_lr_ratio must be positive (the paper uses 2 to 32, B faster than A), "
                          f"got {loraplus_lr_ratio!r}.")
    groups = loraplus_parameter_groups(model)
    settings = [("groupA", loraplus_weight_decay, lr), ("embedding", loraplus_weight_decay, loraplus_lr_embedding),
                ("groupB", loraplus_weight_decay, lr * loraplus_lr_ratio), ("groupB_no_decay", 0.0, lr * loraplus_lr_ratio)]
    param_groups = [{"params": list(groups[key].values()), "weight_decay": decay, "lr": group_lr}
                    for key, decay, group_lr in settings]
    optimizer = optimizer_cls(param_groups, lr=lr, **kwargs)
    if optimizer_cls.__name__ in EIGHT_BIT_OPTIMIZERS:
        import bitsandbytes

        manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
        for module in model.modules():
            if isinstance(module, nn.Embedding):  # 8-bit states are unstable for embeddings
                manager.register_module_override(module, "weight", {"optim_bits": 32})
    return optimizer


def _lora_factors(layer: LoraLayer, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(layer, LoraEmbedding):
        return layer.lora_embedding_A[adapter_name], layer.lora_embedding_B[adapter_name]
    return layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight


class LoraFAOptimizer(Optimizer):
    """AdamW over a model's trainable parameters, with each LoRA B's gradient projected through its frozen A.

    ``frozen_a`` maps a B parameter to ``(A, scaling)``; B parameters absent from it, and every
    other parameter, take a plain AdamW step. Build it with :func:`create_lorafa_optimizer`.
    """

    def __init__(self, params: Iterable[Any], frozen_a: dict[nn.Parameter, tuple[torch.Tensor, float]] | None = None,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True) -> None:
        if lr < 0.0 or eps < 0.0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"LoraFAOptimizer needs lr >= 0, eps >= 0 and betas in [0, 1); got lr={lr}, eps={eps}, "
                              f"betas={betas}.")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "correct_bias": correct_bias})
        self.frozen_a = dict(frozen_a or {})

    def projected_grad(self, param: nn.Parameter) -> torch.Tensor:
        """B's gradient times ``(A Aᵀ + 1e-8·I)⁺ / s²`` (pseudo-inverse, as PEFT), in B's own layout."""
        A, scaling = self.frozen_a[param]
        a = A.detach().flatten(1).to(param.grad.dtype)  # conv A: (r, in·k…) — the same r×r Gram matrix
        gram = a @ a.T + 1e-8 * torch.eye(a.shape[0], device=a.device, dtype=a.dtype)
        grad = param.grad.flatten(1) @ torch.linalg.pinv(gram) / scaling**2
        return grad.reshape(param.grad.shape)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = self.projected_grad(param) if param in self.frozen_a else param.grad
                self._adamw_update(param, grad, group)
        return loss

    def _adamw_update(self, param: nn.Parameter, grad: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1.0 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
        step_size = group["lr"]
        if group["correct_bias"]:
            step_size *= math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
        param.addcdiv_(state["exp_avg"], denom, value=-step_size)
        if group["weight_decay"] > 0.0:  # decoupled decay, after the step (transformers' AdamW)
            param.add_(param, alpha=-group["lr"] * group["weight_decay"])


def create_lorafa_optimizer(model: nn.Module, r: int, lora_alpha: float, lr: float, weight_decay: float = 0.0,
                            use_rslora: bool | None = None) -> LoraFAOptimizer:
    """Freeze every LoRA A and return a :class:`LoraFAOptimizer` over the model's trainable parameters.

    Each B is projected with its own layer's scaling (``rank_pattern``/``alpha_pattern`` and
    rsLoRA included). ``r``, ``lora_alpha`` and ``use_rslora`` are PEFT's signature: the
    scaling they give is only used for a LoRA layer that has none for an adapter; a
    ``use_rslora`` contradicting an active adapter's config is refused.
    """
    configs = getattr(model, "peft_config", {})
    if use_rslora is not None:
        mismatched = [n for n in getattr(model, "active_adapters", []) if n in configs
                      and bool(getattr(configs[n], "use_rslora", False)) != use_rslora]
        if mismatched:
            raise ConfigError(f"use_rslora={use_rslora} contradicts the config of active adapters {mismatched}; "
                              "set rsLoRA in LoraConfig and drop the use_rslora argument.")
        warnings.warn("create_lorafa_optimizer(use_rslora=...) is deprecated: LoraConfig.use_rslora is used.",
                      FutureWarning, stacklevel=2)
    fallback = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
    frozen_a: dict[nn.Parameter, tuple[torch.Tensor, float]] = {}
    for layer in _lora_layers(model):
        for adapter_name in list(layer.r):
            A, B = _lora_factors(layer, adapter_name)
            A.requires_grad_(False)
            frozen_a[B] = (A, layer.scaling.get(adapter_name, fallback))
    if not frozen_a:
        raise UnsupportedOperation("create_lorafa_optimizer found no LoRA layers in this model; add a LoRA adapter "
                                   "(get_peft_model with a LoraConfig) first.")
    trainable = [p for p in model.parameters() if p.requires_grad]
    return LoraFAOptimizer([{"params": trainable, "lr": lr, "weight_decay": weight_decay}], frozen_a=frozen_a,
                           lr=lr, weight_decay=weight_decay)
