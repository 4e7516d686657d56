"""Budget allocation (the paper's Algorithm 1): score triplets, keep the best within a shrinking budget.

After each backward pass the sensitivity ``|p · ∂L/∂p|`` of every entry of A, E and B is
smoothed (``beta1``) and its uncertainty tracked (``beta2``); a triplet's score is the
smoothed-sensitivity × uncertainty of its singular value plus the mean scores of its row
of A and column of B. The total budget (sum of ranks) falls from ``init_r`` per module to
``target_r`` per module on a cubic schedule between ``tinit`` and ``total_step - tfinal``;
triplets at or below the budget's score threshold get ``E = 0``.
"""

from __future__ import annotations

from typing import Any

import torch

from .layer import AdaLoraLinear


class RankAllocator:
    """Sensitivity statistics and the budget schedule of one trainable AdaLoRA adapter."""

    def __init__(self, tuner: Any, adapter_name: str) -> None:
        self.adapter_name = adapter_name
        self.config = tuner.peft_config[adapter_name]
        self.reset_ipt()
        layers = self.layers(tuner)
        self.init_bgt = sum(layer.lora_A[adapter_name].shape[0] for _, layer in layers)
        self.target_bgt = self.config.target_r * len(layers)

    def layers(self, tuner: Any) -> list[tuple[str, AdaLoraLinear]]:
        return [(path, layer) for path, layer in tuner.adapter_layers()
                if isinstance(layer, AdaLoraLinear) and layer.has_adapter(self.adapter_name)]

    def reset_ipt(self) -> None:
        self.exp_avg_ipt: dict[tuple[str, str], torch.Tensor] = {}
        self.exp_avg_unc: dict[tuple[str, str], torch.Tensor] = {}

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """``(budget, whether to mask now)`` at ``step``: warm-up, cubic decrease, final."""
        c = self.config
        if step <= c.tinit:
            return self.init_bgt, False
        if step > c.total_step - c.tfinal:
            return self.target_bgt, True
        left = 1 - (step - c.tinit) / (c.total_step - c.tfinal - c.tinit)
        return int((self.init_bgt - self.target_bgt) * left ** 3 + self.target_bgt), step % c.deltaT == 0

    @torch.no_grad()
    def update_ipt(self, tuner: Any) -> None:
        b1, b2 = self.config.beta1, self.config.beta2
        for path, layer in self.layers(tuner):
            for attr in ("lora_A", "lora_B", "lora_E"):
                p = getattr(layer, attr)[self.adapter_name]
                if p.grad is None:
                    continue
                key = (path, attr)
                ipt = (p * p.grad).abs()
                avg = self.exp_avg_ipt.get(key, torch.zeros_like(p))
                unc = self.exp_avg_unc.get(key, torch.zeros_like(p))
                avg = b1 * avg + (1 - b1) * ipt
                self.exp_avg_ipt[key] = avg
                self.exp_avg_unc[key] = b2 * unc + (1 - b2) * (ipt - avg).abs()

    def _score(self, path: str, attr: str, like: torch.Tensor) -> torch.Tensor:
        key = (path, attr)
        if key not in self.exp_avg_ipt:
            return torch.zeros_like(like)
        return self.exp_avg_ipt[key] * self.exp_avg_unc[key]

    @torch.no_grad()
    def mask_to_budget(self, tuner: Any, budget: int) -> dict[str, list[bool]]:
        """Zero E for the ``init_bgt - budget`` lowest-scoring triplets; return the kept masks."""
        name, scores = self.adapter_name, {}
        for path, layer in self.layers(tuner):
            A, B, E = layer.lora_A[name], layer.lora_B[name], layer.lora_E[name]
            score_a = self._score(path, "lora_A", A).mean(dim=1)
            score_b = self._score(path, "lora_B", B).mean(dim=0)
            scores[path] = (self._score(path, "lora_E", E).view(-1) + score_a + score_b, E)
        k = self.init_bgt - budget
        if k <= 0 or not scores:
            threshold = -float("inf")
        else:
            threshold = torch.kthvalue(torch.cat([s for s, _ in scores.values()]), k).values.item()
        pattern = {}
        for path, (score, E) in scores.items():
            keep = score > threshold
            E.masked_fill_(~keep.view(-1, 1), 0.0)
            pattern[f"{path}.lora_E"] = keep.tolist()
        return pattern


@torch.no_grad()
def mask_using_rank_pattern(tuner: Any, adapter_name: str, rank_pattern: dict[str, list[bool]]) -> None:
    """Zero E of every triplet the pattern drops (after allocation ends, and on load)."""
    for path, layer in tuner.adapter_layers():
        if isinstance(layer, AdaLoraLinear) and layer.has_adapter(adapter_name):
            keep = rank_pattern.get(f"{path}.lora_E")
            if keep is not None:
                E = layer.lora_E[adapter_name]
                E.masked_fill_(~torch.tensor(keep, dtype=torch.bool, device=E.device).view(-1, 1), 0.0)


def update_and_allocate(tuner: Any, global_step: int) -> None:
    """Update sensitivities and mask to the step's budget; call after ``backward()``, before ``zero_grad()``.

    Exposed as ``model.base_model.update_and_allocate(step)``, as in PEFT. The resulting
    allocation is kept in the adapter config's ``rank_pattern`` (saved with the adapter).
    """
    name = trainable_adapter(tuner)
    config = tuner.peft_config[name]
    allocators = tuner.__dict__.setdefault("_adalora_allocators", {})
    allocator = allocators.get(name)
    if allocator is None:
        allocator = allocators[name] = RankAllocator(tuner, name)
    end = config.total_step - config.tfinal
    if global_step < end:
        allocator.update_ipt(tuner)
        budget, mask_now = allocator.budget_schedule(global_step)
        if mask_now:
            config.rank_pattern = allocator.mask_to_budget(tuner, budget)
    elif global_step == end:
        config.rank_pattern = allocator.mask_to_budget(tuner, allocator.target_bgt)
        allocator.reset_ipt()
    elif config.rank_pattern:
        mask_using_rank_pattern(tuner, name, config.rank_pattern)


def trainable_adapter(tuner: Any) -> str:
    """The one AdaLoRA adapter being trained (not loaded for inference)."""
    names = [n for n, c in tuner.peft_config.items() if c.peft_type == "ADALORA" and not c.inference_mode]
    if len(names) != 1:
        from peft_core.errors import ConfigError

        raise ConfigError(f"update_and_allocate needs exactly one trainable AdaLoRA adapter; found {names or 'none'} "
                          "(adapters loaded with is_trainable=False are frozen).")
    return names[0]
