"""Combining adapters: task arithmetic, TIES, DARE, magnitude pruning, SVD recombination.

Two layers live here:

* **the math** — plain functions on lists of same-shaped "task tensors" (adapter factors or
  weight deltas), public so that anyone can merge tensors the way ``add_weighted_adapter``
  does: :func:`task_arithmetic`, :func:`ties`, :func:`dare_linear`, :func:`dare_ties`,
  :func:`magnitude_prune`, :func:`prune`, :func:`calculate_majority_sign_mask`,
  :func:`disjoint_merge`, and :func:`svd_factors` (the best rank-r factorisation of a
  combined delta);
* **the driver** — :func:`add_weighted_adapter`, method-independent. It validates the
  request, asks the method's plugin for an :class:`AdapterCombiner` through the
  ``peft_core_combine_adapters`` hook (what the combined adapter's config is, and how one
  layer's tensors are combined — LoRA combines its A/B factors, another method its own
  tensors), creates the new adapter through the normal injection path and lets the
  combiner fill it, layer by layer. If anything fails half way the new adapter is deleted,
  so the model is never left with a half-built adapter.

The numbers follow Hugging Face PEFT for the same inputs and seed (random pruning draws
happen in the same order), so results can be compared one to one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from .errors import AdapterNameError, ConfigError, MergeError, UnsupportedOperation

if TYPE_CHECKING:
    from torch import nn

    from .config import PeftConfig
    from .layer import AdapterLayer

#: every ``combination_type`` :func:`add_weighted_adapter` accepts
COMBINATION_TYPES = (
    "svd",
    "linear",
    "cat",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
#: combination types that drop entries and so need ``density``
PRUNING_TYPES = frozenset(t for t in COMBINATION_TYPES if t.startswith(("ties", "dare", "magnitude")))
MAJORITY_SIGN_METHODS = ("total", "frequency")


# -- the math ------------------------------------------------------------------------------


def _stack_weighted(task_tensors: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Stack tensors on a new dim 0 and multiply each by its weight (broadcast over the rest)."""
    stacked = torch.stack(list(task_tensors), dim=0)
    weights = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)
    return stacked * weights.reshape(weights.shape + (1,) * (stacked.dim() - weights.dim()))


def prune(
    tensor: torch.Tensor, density: float, method: Literal["magnitude", "random"], rescale: bool = False
) -> torch.Tensor:
    """Keep a fraction ``density`` of ``tensor``'s entries, zeroing the rest.

    ``"magnitude"`` keeps the largest absolute values (TIES' trim step); ``"random"`` keeps
    each entry with probability ``density`` (DARE's drop step), and with ``rescale``
    divides the survivors by ``density`` so the expected value is unchanged. A density of 1
    or more keeps everything (with a warning, as it is almost always a mistake).
    """
    if density >= 1:
        warnings.warn(f"density={density} keeps every value; nothing is pruned.", UserWarning, stacklevel=2)
        return tensor
    if density < 0:
        raise ConfigError(f"density must be in [0, 1], got {density}.")
    if method == "magnitude":
        keep = int(density * tensor.numel())
        flat_mask = torch.zeros(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
        flat_mask[torch.topk(tensor.abs().reshape(-1), k=keep, largest=True).indices] = 1
        return tensor * flat_mask.reshape(tensor.shape)
    if method == "random":
        kept = tensor * torch.bernoulli(torch.full_like(tensor, density))
        return kept / density if rescale else kept
    raise ConfigError(f"prune method must be 'magnitude' or 'random', got {method!r}.")


def calculate_majority_sign_mask(
    tensor: torch.Tensor, method: Literal["total", "frequency"] = "total"
) -> torch.Tensor:
    """Where each stacked task tensor (dim 0) agrees with the elected sign (TIES' elect step).

    ``"total"`` elects the sign of the summed values (mass), ``"frequency"`` the sign most
    tensors have (votes); ties go to ``+``. Zeros never agree, so pruned entries drop out.
    """
    signs = tensor.sign()
    if method == "total":
        votes = tensor.sum(dim=0)
    elif method == "frequency":
        votes = signs.sum(dim=0)
    else:
        raise ConfigError(f"majority_sign_method must be one of {MAJORITY_SIGN_METHODS}, got {method!r}.")
    elected = torch.where(votes >= 0, 1, -1)
    return signs == elected


def disjoint_merge(task_tensors: torch.Tensor, majority_sign_mask: torch.Tensor) -> torch.Tensor:
    """Average, per entry, only the stacked values that agree with the elected sign."""
    total = (task_tensors * majority_sign_mask).sum(dim=0)
    count = majority_sign_mask.sum(dim=0)
    return total / torch.clamp(count, min=1.0)


def task_arithmetic(task_tensors: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """The weighted sum ``Σ wᵢ·tᵢ``: plain task arithmetic (negative weights subtract)."""
    return _stack_weighted(task_tensors, weights).sum(dim=0)


def magnitude_prune(task_tensors: Sequence[torch.Tensor], weights: torch.Tensor, density: float) -> torch.Tensor:
    """Task arithmetic after keeping only the largest-magnitude ``density`` of each tensor."""
    return task_arithmetic([prune(t, density, "magnitude") for t in task_tensors], weights)


def ties(
    task_tensors: Sequence[torch.Tensor],
    weights: torch.Tensor,
    density: float,
    majority_sign_method: Literal["total", "frequency"] = "total",
) -> torch.Tensor:
    """TIES-merging: trim by magnitude, elect a sign per entry, average the agreeing values."""
    trimmed = torch.stack([prune(t, density, "magnitude") for t in task_tensors], dim=0)
    mask = calculate_majority_sign_mask(trimmed, majority_sign_method)
    return disjoint_merge(_stack_weighted(list(trimmed), weights), mask)


def dare_linear(task_tensors: Sequence[torch.Tensor], weights: torch.Tensor, density: float) -> torch.Tensor:
    """DARE: drop entries at random (keeping ``density``), rescale, then task arithmetic."""
    return task_arithmetic([prune(t, density, "random", rescale=True) for t in task_tensors], weights)


def dare_ties(
    task_tensors: Sequence[torch.Tensor],
    weights: torch.Tensor,
    density: float,
    majority_sign_method: Literal["total", "frequency"] = "total",
) -> torch.Tensor:
    """DARE's random drop and rescale, then TIES' sign election and disjoint average."""
    dropped = torch.stack([prune(t, density, "random", rescale=True) for t in task_tensors], dim=0)
    mask = calculate_majority_sign_mask(dropped, majority_sign_method)
    return disjoint_merge(_stack_weighted(list(dropped), weights), mask)


def svd_factors(
    delta: torch.Tensor,
    rank: int,
    clamp: float | None = None,
    full_matrices: bool = True,
    driver: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors ``(B, A)`` of a 2-D ``delta`` (``B @ A ≈ delta``).

    ``B = U·S`` carries the singular values, ``A = Vᴴ``, as kohya's SVD merge does. With
    ``clamp`` (a quantile in (0, 1]) both factors are clipped to ± that quantile of their
    entries, which tames outliers. When ``rank`` exceeds what the matrix has, the extra
    rows/columns are zero, so the factors always have exactly ``rank`` as inner size.
    ``driver`` is passed to :func:`torch.linalg.svd` (CUDA only).
    """
    if delta.dim() != 2:
        raise ValueError(f"svd_factors needs a 2-D tensor, got shape {tuple(delta.shape)}; flatten it first.")
    dtype = delta.dtype
    work = delta if dtype in (torch.float32, torch.float64) else delta.float()
    U, S, Vh = torch.linalg.svd(work, full_matrices=full_matrices, driver=driver)
    k = min(rank, S.shape[0])
    B = U[:, :k] @ torch.diag(S[:k])
    A = Vh[:k, :]
    if clamp is not None:
        high = torch.quantile(torch.cat([B.flatten(), A.flatten()]), clamp)
        B, A = B.clamp(-high, high), A.clamp(-high, high)
    if k < rank:
        B = torch.cat([B, B.new_zeros(B.shape[0], rank - k)], dim=1)
        A = torch.cat([A, A.new_zeros(rank - k, A.shape[1])], dim=0)
    return B.to(dtype), A.to(dtype)


# -- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    """One ``add_weighted_adapter`` request, validated, as the combiner hooks receive it."""

    adapters: tuple[str, ...]
    weights: tuple[float, ...]
    combination_type: str = "svd"
    svd_rank: int | None = None
    svd_clamp: float | None = None
    svd_full_matrices: bool = True
    svd_driver: str | None = None
    density: float | None = None
    majority_sign_method: str = "total"

    @property
    def uses_svd(self) -> bool:
        """The types that combine full weight deltas and refactorise them by SVD."""
        return self.combination_type.endswith("svd")

    @property
    def tensor_rule(self) -> str:
        """How the task tensors are combined: ``svd`` is linear on deltas, ``ties_svd`` is ties, …"""
        if self.combination_type == "svd":
            return "linear"
        return self.combination_type.removesuffix("_svd")

    def combine(self, task_tensors: Sequence[torch.Tensor], weights: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Apply :attr:`tensor_rule` to same-shaped tensors with per-tensor ``weights``."""
        weights = torch.as_tensor(weights, dtype=task_tensors[0].dtype, device=task_tensors[0].device)
        rule = self.tensor_rule
        if rule == "linear":
            return task_arithmetic(task_tensors, weights)
        assert self.density is not None  # validated in add_weighted_adapter
        if rule == "ties":
            return ties(task_tensors, weights, self.density, self.majority_sign_method)  # type: ignore[arg-type]
        if rule == "dare_linear":
            return dare_linear(task_tensors, weights, self.density)
        if rule == "dare_ties":
            return dare_ties(task_tensors, weights, self.density, self.majority_sign_method)  # type: ignore[arg-type]
        if rule == "magnitude_prune":
            return magnitude_prune(task_tensors, weights, self.density)
        raise ConfigError(f"combination_type {self.combination_type!r} has no tensor rule.")


class AdapterCombiner(Protocol):
    """What a method's ``peft_core_combine_adapters`` implementation returns.

    ``config`` is the new adapter's config: the core injects the new adapter with it (so
    its layers and tensors exist with the right shapes) before calling :meth:`combine`.
    """

    config: PeftConfig

    def combine(self, layer: AdapterLayer, adapter_name: str, sources: list[tuple[str, float]]) -> None:
        """Fill adapter ``adapter_name`` of ``layer`` from ``sources`` — ``(adapter, weight)``
        pairs of the requested adapters this layer holds (never empty). Runs under
        ``torch.no_grad()``; raise a :class:`~peft_core.errors.PeftCoreError` to refuse."""


# -- the driver ----------------------------------------------------------------------------


def _validate(combination: Combination) -> None:
    if combination.combination_type not in COMBINATION_TYPES:
        raise ConfigError(
            f"combination_type {combination.combination_type!r} is unknown; choose one of {', '.join(COMBINATION_TYPES)}."
        )
    if combination.combination_type in PRUNING_TYPES:
        d = combination.density
        if d is None or isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 1:
            raise ConfigError(
                f"combination_type {combination.combination_type!r} prunes values and needs density in [0, 1] "
                f"(the fraction kept), got {d!r}."
            )
    if combination.majority_sign_method not in MAJORITY_SIGN_METHODS:
        raise ConfigError(
            f"majority_sign_method must be one of {MAJORITY_SIGN_METHODS}, got {combination.majority_sign_method!r}."
        )
    if combination.svd_rank is not None and (
        isinstance(combination.svd_rank, bool) or not isinstance(combination.svd_rank, int) or combination.svd_rank <= 0
    ):
        raise ConfigError(f"svd_rank must be a positive integer or None, got {combination.svd_rank!r}.")
    if combination.svd_clamp is not None and not 0 < combination.svd_clamp <= 1:
        raise ConfigError(f"svd_clamp is a quantile and must be in (0, 1], got {combination.svd_clamp!r}.")


def add_weighted_adapter(
    model: nn.Module,
    adapters: Sequence[str],
    weights: Sequence[float],
    adapter_name: str,
    combination_type: str = "svd",
    svd_rank: int | None = None,
    svd_clamp: float | None = None,
    svd_full_matrices: bool = True,
    svd_driver: str | None = None,
    density: float | None = None,
    majority_sign_method: Literal["total", "frequency"] = "total",
) -> None:
    """Add adapter ``adapter_name`` = the weighted combination of ``adapters`` (PEFT's API).

    ``model`` is a ``PeftModel``, its tuner, or a model with injected adapters. Weights may
    be negative (subtracting an adapter's effect). ``combination_type`` picks the rule:
    ``linear``/``cat``/``svd`` are weighted sums (``cat`` and ``svd`` exact up to the SVD
    truncation, ``linear`` combines factors and is only an approximation), the ``ties``,
    ``dare_*`` and ``magnitude_prune`` families prune with ``density`` first; ``*_svd``
    variants apply the rule to full weight deltas and refactorise them. A single adapter
    always combines linearly. The new adapter is not activated (``set_adapter`` does that)
    and is frozen. An existing ``adapter_name`` leaves the model unchanged, with a warning,
    as in PEFT.
    """
    from .plugins import hook
    from .registry import Capability
    from .serialization import tuner_of
    from .wrappers import ModulesToSaveWrapper

    tuner = tuner_of(model)
    if adapter_name in tuner.peft_config:
        warnings.warn(
            f"an adapter named {adapter_name!r} already exists; add_weighted_adapter did nothing. "
            "Delete it first or choose another name.",
            UserWarning,
            stacklevel=2,
        )
        return
    adapters = [adapters] if isinstance(adapters, str) else list(adapters)
    weights = [weights] if isinstance(weights, (int, float)) else list(weights)
    if not adapters:
        raise AdapterNameError("add_weighted_adapter needs at least one adapter to combine.")
    if len(weights) != len(adapters):
        raise ConfigError(f"got {len(adapters)} adapters but {len(weights)} weights; pass one weight per adapter.")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) for w in weights):
        raise ConfigError(f"weights must be numbers, got {weights!r}.")
    for name in adapters:
        tuner._config(name)  # unknown names raise AdapterNameError listing the known ones
    specs = {tuner.spec_for(name).name: tuner.spec_for(name) for name in adapters}
    if len(specs) > 1:
        raise UnsupportedOperation(
            f"add_weighted_adapter combines adapters of one method; got {sorted(specs)}. Combine each method's adapters separately."
        )
    spec = next(iter(specs.values()))
    spec.require(Capability.WEIGHTED_COMBINE, "add_weighted_adapter")
    shared = [
        path for path, module in tuner.adapter_modules()
        if isinstance(module, ModulesToSaveWrapper) and sum(a in module.modules_to_save for a in adapters) > 1
    ]
    if shared:
        raise MergeError(
            f"adapters {adapters} each train their own copy of {shared[0]!r} (modules_to_save); full copies "
            "cannot be combined. Combine adapters that do not share modules_to_save."
        )
    combination = Combination(
        adapters=tuple(adapters),
        weights=tuple(float(w) for w in weights),
        combination_type="linear" if len(adapters) == 1 else combination_type,
        svd_rank=svd_rank,
        svd_clamp=svd_clamp,
        svd_full_matrices=svd_full_matrices,
        svd_driver=svd_driver,
        density=density,
        majority_sign_method=majority_sign_method,
    )
    _validate(combination)
    configs = [tuner.peft_config[name] for name in adapters]
    combiner = hook().peft_core_combine_adapters(spec=spec, configs=configs, combination=combination)
    if combiner is None:
        raise UnsupportedOperation(
            f"{spec.name} declares '{Capability.WEIGHTED_COMBINE.value}' but no installed plugin implements "
            "peft_core_combine_adapters for it; reinstall its plugin."
        )
    tuner.inject_adapter(combiner.config, adapter_name)
    try:
        with torch.no_grad():
            for path, module in tuner.adapter_modules():
                if isinstance(module, ModulesToSaveWrapper):
                    _copy_head(module, adapter_name, adapters)
                    continue
                if not module.has_adapter(adapter_name):
                    continue
                sources = [(a, w) for a, w in zip(combination.adapters, combination.weights) if module.has_adapter(a)]
                if not sources:
                    raise MergeError(
                        f"layer {path!r} is targeted by the combined config but holds none of {adapters}; "
                        "the adapters' target settings (exclude_modules, layers_to_transform) differ too much to combine."
                    )
                combiner.combine(module, adapter_name, sources)
        for _, layer in tuner.adapter_layers():
            for param in layer.adapter_parameters(adapter_name):
                param.requires_grad_(False)
    except BaseException:
        tuner.delete_adapter(adapter_name)
        raise


def _copy_head(wrapper: Any, adapter_name: str, adapters: Sequence[str]) -> None:
    """The new adapter's copy of a ``modules_to_save`` module starts as the one source's trained copy."""
    if adapter_name not in wrapper.modules_to_save:
        return
    owners = [a for a in adapters if a in wrapper.modules_to_save]
    if owners:
        wrapper.modules_to_save[adapter_name].load_state_dict(wrapper.modules_to_save[owners[0]].state_dict())
