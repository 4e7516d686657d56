"""Adaptive subspace allocation (ASA): during training, keep only the most important subspaces trainable.

Between ``init_warmup`` and ``final_warmup`` every call folds the current gradients into each
subspace's importance averages; every ``mask_interval`` steps the number of subspaces allowed
to train (summed over all layers) follows a polynomial schedule from all of them down to
``asa_target_subspaces``, the highest-scoring ones stay trainable, the rest are frozen (their
current values keep acting), and the averages restart. One function does all of it,
:func:`update_and_allocate`; the tuner exposes it as ``model.base_model.update_and_allocate(step)``
and :class:`~peft_core_adamss.callback.AdamssAsaCallback` calls it from a ``transformers.Trainer``.
"""

from __future__ import annotations

from typing import Any

import torch

from .layer import AdamssLayer


def scheduled_budget(step: int, config: Any, total: int) -> int | None:
    """How many subspaces may train at ``step``: ``T + (total − T) · (1 − progress)^exponent`` during warmup."""
    if total <= 0 or step < config.init_warmup:
        return None
    if step > config.final_warmup:
        return config.asa_target_subspaces
    remaining = 1.0 - (step - config.init_warmup) / (config.final_warmup - config.init_warmup)
    remaining = min(1.0, max(0.0, remaining))
    target = config.asa_target_subspaces
    return int(target + (total - target) * remaining ** config.asa_schedule_exponent)


def keep_most_important(layers: list[AdamssLayer], adapter_name: str, budget: int) -> int:
    """Leave the ``budget`` highest-scoring subspaces trainable, freeze the other scored ones; return how many train.

    Subspaces without a score yet (no gradient seen) are left as they are.
    """
    scored = [(layer, i, s) for layer in layers for i in range(layer.num_subspaces[adapter_name])
              if (s := layer.asa_importance[adapter_name].score(i)) is not None]
    if not scored:
        return 0
    keep = set(torch.stack([s for _, _, s in scored]).topk(min(budget, len(scored))).indices.tolist())
    for position, (layer, i, _) in enumerate(scored):
        layer.set_subspace_trainable(adapter_name, i, position in keep)
    return len(keep)


def update_and_allocate(tuner: Any, global_step: int) -> None:
    """Accumulate importance and, at mask intervals, re-allocate trainable subspaces for every active ASA adapter.

    Call after ``loss.backward()`` (and the optimizer step) and before ``zero_grad()``, once per
    optimizer step. Adapters created without ``use_asa`` are left alone.
    """
    for adapter_name in tuner.active_adapters:
        config = tuner.peft_config[adapter_name]
        if not getattr(config, "use_asa", False):
            continue
        if not config.init_warmup <= global_step <= config.final_warmup:
            continue
        layers = [m for m in tuner.model.modules() if isinstance(m, AdamssLayer) and adapter_name in m.asa_importance]
        for layer in layers:
            layer.update_importance(adapter_name, config.asa_importance_beta, config.asa_uncertainty_beta)
        if global_step % config.mask_interval != 0:
            continue
        total = sum(layer.num_subspaces[adapter_name] for layer in layers)
        budget = scheduled_budget(global_step, config, total)
        if budget is not None:
            keep_most_important(layers, adapter_name, budget)
        for layer in layers:
            layer.asa_importance[adapter_name].reset()
