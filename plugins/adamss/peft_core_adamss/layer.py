"""AdaMSS layers: low-rank updates inside clustered subspaces of the weight's own singular vectors.

For a weight ``W`` (the bias appended as an extra input column when there is one), the input
is projected onto the top-``R`` right singular vectors (``adamss_newB``, frozen and saved);
the output rows are grouped by KMeans on their left singular vectors; subspace ``i`` learns
``B_i (rows_i × r_i) A_i (r_i × R)`` and writes only its own rows. Stacking the subspaces'
``B_i A_i`` into their rows gives one ``(out × R)`` map ``M``, and the update is

``ΔW_full = M · newB``  (``ΔW`` its first ``in`` columns, ``Δb`` its last when there is a bias).

Which row belongs to which subspace is recomputed from the base weight when the layer is
built (see :mod:`.subspaces`); the file holds ``A_i``, ``B_i`` and ``newB`` only, as PEFT's.
The subspaces' importance statistics for adaptive subspace allocation live here too
(:class:`SubspaceImportance`); the schedule that uses them is in :mod:`.allocation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from peft_core.buffers import BufferDict
from peft_core.errors import TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.weights import LINEAR, LayerDescription, dense_weight

from .subspaces import decompose


@dataclass
class SubspaceImportance:
    """Exponential moving averages of ``|θ · ∇θ|`` and of its change, per subspace, for A and B."""

    importance_A: list[torch.Tensor | None] = field(default_factory=list)
    importance_B: list[torch.Tensor | None] = field(default_factory=list)
    uncertainty_A: list[torch.Tensor | None] = field(default_factory=list)
    uncertainty_B: list[torch.Tensor | None] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> SubspaceImportance:
        return cls(*([None] * n for _ in range(4)))

    def reset(self) -> None:
        n = len(self.importance_A)
        self.importance_A, self.importance_B, self.uncertainty_A, self.uncertainty_B = ([None] * n for _ in range(4))

    def score(self, i: int) -> torch.Tensor | None:
        """Importance × uncertainty, averaged over A's and B's entries; ``None`` before any gradient."""
        if self.importance_A[i] is None or self.importance_B[i] is None:
            return None
        a = (self.importance_A[i] * self.uncertainty_A[i]).mean()
        return a + (self.importance_B[i] * self.uncertainty_B[i]).mean()


def _accumulate(param: torch.Tensor, importance: list, uncertainty: list, i: int, beta_i: float, beta_u: float) -> None:
    if param.grad is None:
        return
    if importance[i] is None:
        importance[i] = torch.zeros_like(param, requires_grad=False)
        uncertainty[i] = torch.zeros_like(param, requires_grad=False)
    current = (param * param.grad).abs().detach()
    # the uncertainty sees how far this step's importance is from the running average before it moves
    uncertainty[i].mul_(beta_u).add_((current - importance[i]).abs(), alpha=1 - beta_u)
    importance[i].mul_(beta_i).add_(current, alpha=1 - beta_i)


class AdamssLayer(AdapterLayer):
    """AdaMSS on ``nn.Linear``."""

    method = "ADAMSS"
    adapter_layer_names = ("adamss_A", "adamss_B", "adamss_newB")
    other_param_names = ("num_subspaces", "scatter_index", "asa_importance")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.adamss_A = nn.ModuleDict()
        self.adamss_B = nn.ModuleDict()
        self.adamss_newB = BufferDict()

    @property
    def _has_bias(self) -> bool:
        return getattr(self.base_layer, "bias", None) is not None

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        weight = dense_weight(self.base_layer).detach()
        if self._has_bias:
            weight = torch.cat([weight, self.base_layer.bias.detach().reshape(-1, 1).to(weight.dtype)], dim=1)
        parts = decompose(weight, config)
        self.num_subspaces[adapter_name] = len(parts.rows)
        self.scatter_index[adapter_name] = torch.cat(parts.rows)
        self.adamss_newB[adapter_name] = parts.projection
        self.adamss_A[adapter_name] = nn.ParameterList([nn.Parameter(a) for a in parts.A])
        self.adamss_B[adapter_name] = nn.ParameterList([nn.Parameter(b) for b in parts.B])
        if config.use_asa:
            self.asa_importance[adapter_name] = SubspaceImportance.empty(len(parts.rows))

    def row_map(self, adapter_name: str) -> torch.Tensor:
        """``M`` (out × R): each subspace's ``B_i A_i`` written into its own output rows."""
        blocks = torch.cat([B @ A for A, B in zip(self.adamss_A[adapter_name], self.adamss_B[adapter_name])])
        rows = self.scatter_index[adapter_name].to(blocks.device)
        return blocks.new_zeros(self.description.out_features, blocks.shape[1]).index_copy(0, rows, blocks)

    def _full_delta(self, adapter_name: str) -> torch.Tensor:
        return self.row_map(adapter_name) @ self.adamss_newB[adapter_name]

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        return self._full_delta(adapter_name)[:, : self.description.in_features]

    def get_delta_bias(self, adapter_name: str) -> torch.Tensor | None:
        return self._full_delta(adapter_name)[:, -1] if self._has_bias else None

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        projection = self.adamss_newB[adapter_name]
        x = x.to(projection.dtype)
        if self._has_bias:
            x = torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)
        delta = F.linear(F.linear(x, projection), self.row_map(adapter_name))
        return result + delta.to(result.dtype)

    # -- adaptive subspace allocation ------------------------------------------------------

    def subspace_parameters(self, adapter_name: str, i: int) -> tuple[nn.Parameter, nn.Parameter]:
        return self.adamss_A[adapter_name][i], self.adamss_B[adapter_name][i]

    def update_importance(self, adapter_name: str, importance_beta: float, uncertainty_beta: float) -> None:
        """Fold the current gradients into the subspaces' importance averages (no-op without ASA or gradients)."""
        stats = self.asa_importance.get(adapter_name)
        if stats is None:
            return
        for i in range(self.num_subspaces[adapter_name]):
            A, B = self.subspace_parameters(adapter_name, i)
            _accumulate(A, stats.importance_A, stats.uncertainty_A, i, importance_beta, uncertainty_beta)
            _accumulate(B, stats.importance_B, stats.uncertainty_B, i, importance_beta, uncertainty_beta)

    def set_subspace_trainable(self, adapter_name: str, i: int, trainable: bool) -> None:
        """Freeze (and drop the gradient of) or unfreeze one subspace; its current values keep acting."""
        for param in self.subspace_parameters(adapter_name, i):
            param.requires_grad_(trainable)
            if not trainable:
                param.grad = None


def create_adamss_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> AdamssLayer:
    """The ``MethodSpec.layer_factory`` of AdaMSS: ``nn.Linear`` targets only, as in PEFT."""
    if description.kind != LINEAR or description.fan_in_fan_out:
        what = "a Conv1D (transposed) layer" if description.kind == LINEAR else f"a {description.kind} layer"
        raise TargetModulesError(
            f"AdaMSS cannot adapt {module_name!r}, {what}; it adapts nn.Linear layers (as PEFT's AdaMSS does). "
            "Narrow target_modules to linear layers."
        )
    layer = AdamssLayer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
