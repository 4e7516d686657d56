"""CorDA preprocessing: input covariances from calibration data, then a covariance-weighted SVD.

For a linear layer ``W`` (out × in) whose inputs have covariance ``C`` (in × in), CorDA
decomposes ``W C = U S Vᵀ`` and maps the right factors back, ``V' = (Vᵀ C⁻¹)ᵀ``, so that
``U S V'ᵀ = W`` exactly while the singular directions are ordered by how much they matter
*for the inputs the model actually sees*. :func:`preprocess_corda` leaves on every targeted
module an ``eigens`` record holding the ``r`` directions the adapter takes (the largest for
``"ipm"``, the smallest for ``"kpm"``); ``get_peft_model`` with ``init_lora_weights="corda"``
turns them into ``A``/``B`` and writes the residual ``W - s·B·A`` into the base (see
:mod:`peft_core_lora_corda.init`). Caches use Hugging Face PEFT's file layout, so a cache or
covariance file written by either library is read by the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from peft_core.errors import ConfigError
from peft_core.layer import base_of
from peft_core.targeting import TargetMatcher, pattern_value, walk_modules
from peft_core.weights import LINEAR, dense_weight, describe_layer

from .config import CordaConfig

#: relative ridge added to C (times its mean diagonal) before inverting; doubled until C·C⁻¹ ≈ I
INITIAL_DAMP = 0.01
MAX_INVERSE_ERROR = 0.05


@dataclass
class CordaEigens:
    """The ``r`` covariance-weighted singular triplets one adapter is built from."""

    S_WC: torch.Tensor  # (r,) singular values of W·C
    U_WC: torch.Tensor  # (out, r) left singular vectors
    V_WC: torch.Tensor  # (in, r) right singular vectors mapped back through C⁻¹


def corda_settings(config: Any) -> CordaConfig:
    """The config's ``corda_config`` as a :class:`CordaConfig` (defaults when unset)."""
    config.corda_config = CordaConfig() if config.corda_config is None else CordaConfig.coerce(config.corda_config)
    return config.corda_config


def corda_targets(model: nn.Module, config: Any) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of the linear layers ``config`` targets (adapter layers count by their base)."""
    matcher = TargetMatcher(config, model)
    for name, module in walk_modules(model):
        if not name or not matcher.targeted(name, module) or matcher.excluded(name):
            continue
        desc = describe_layer(base_of(module))
        if desc is not None and desc.kind == LINEAR and not desc.quantized:
            yield name, module


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


@torch.no_grad()
def preprocess_corda(model: nn.Module, lora_config: Any, run_model: Callable[[], None] | None = None,
                     hooked_model: nn.Module | None = None) -> None:
    """Attach to every targeted linear module of ``model`` the ``eigens`` the ``"corda"`` init needs.

    ``run_model()`` runs calibration batches through ``hooked_model`` (``model`` unless
    given: a copy on another device, say) while the inputs of the targeted layers are
    collected; a few hundred distinct samples are typical, too few make the covariance
    rank-deficient. It may be ``None`` when ``corda_config.cache_file`` or
    ``covariance_file`` already exists. Call this before ``get_peft_model``.
    """
    settings = corda_settings(lora_config)
    targets = dict(corda_targets(model, lora_config))
    if not targets:
        raise ConfigError("preprocess_corda found no targeted linear layers; check target_modules.")
    cache = settings.cache_file
    if cache is not None and os.path.exists(cache) and os.path.getsize(cache) > 0:
        stored = torch.load(cache, map_location=_device(model))
        for name, module in targets.items():
            base_of(module).eigens = CordaEigens(*(stored[f"{name}.eigens.{k}"] for k in ("S_WC", "U_WC", "V_WC")))
        return
    covariances, counts = _covariances(model, lora_config, settings, targets, run_model, hooked_model)
    layers = tqdm(targets.items(), desc="CorDA decompositions", disable=not settings.verbose)
    for name, module in layers:
        rank = pattern_value(lora_config.rank_pattern or {}, name, lora_config.r)
        base = base_of(module)
        base.eigens = decompose(dense_weight(base).float(), covariances[name].float(), rank, settings.corda_method)
        if not settings.prune_temporary_fields:
            base.covariance_matrix, base.sample_count = covariances[name], counts.get(name)
    if cache is not None:
        saved = {f"{name}.eigens.{k}": getattr(base_of(m).eigens, k) for name, m in targets.items()
                 for k in ("S_WC", "U_WC", "V_WC")}
        _save(saved, cache)


def _save(tensors: dict[str, Any], path: str) -> None:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    torch.save(tensors, path)


def _covariances(model: nn.Module, config: Any, settings: CordaConfig, targets: dict[str, nn.Module],
                 run_model: Callable[[], None] | None,
                 hooked_model: nn.Module | None) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Mean over forward calls of ``x̂ᵀ x̂`` per layer, ``x̂`` the call's inputs scaled by their largest value."""
    path = settings.covariance_file
    if path is not None and os.path.exists(path) and os.path.getsize(path) > 0:
        stored = torch.load(path, map_location=_device(model))
        return {name: stored[name] for name in targets}, {}
    if run_model is None:
        raise ConfigError("preprocess_corda needs run_model (a function running calibration batches) unless "
                          "corda_config.cache_file or covariance_file already exists.")
    hooked = model if hooked_model is None else hooked_model
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def collector(name: str) -> Callable:
        def collect(module: nn.Module, args: tuple, output: Any) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1])  # (tokens, in): one calibration call's rows
            if not settings.use_float16_for_covariance:
                x = x.float()
            x = x / x.max().abs()
            covariance = x.T @ x
            if not (torch.isfinite(x).all() and torch.isfinite(covariance).all()):
                raise ConfigError(f"CorDA: layer {name!r} saw NaN/inf inputs (or an all-zero call); check the "
                                  "calibration data, or drop use_float16_for_covariance if it overflows.")
            sums[name] = covariance if name not in sums else sums[name] + covariance
            counts[name] = counts.get(name, 0) + 1
        return collect

    was_training = hooked.training
    hooked.eval()
    handles = [module.register_forward_hook(collector(name)) for name, module in corda_targets(hooked, config)]
    try:
        run_model()
    finally:
        for handle in handles:
            handle.remove()
        hooked.train(was_training)
    missing = sorted(set(targets) - set(sums))
    if missing:
        raise ConfigError(f"CorDA: run_model never reached these targeted layers: {missing[:5]}; make it run "
                          "the model (or hooked_model) forward on calibration data.")
    covariances = {name: sums[name] / counts[name] for name in targets}
    if path is not None:
        _save(covariances, path)
    return covariances, counts


def decompose(weight: torch.Tensor, covariance: torch.Tensor, rank: int, method: str) -> CordaEigens:
    """The ``rank`` covariance-weighted singular triplets of ``weight`` (out × in) that ``method`` keeps."""
    if method not in ("ipm", "kpm"):
        raise ConfigError(f"corda_method must be 'ipm' or 'kpm', got {method!r}.")
    size = covariance.shape[0]
    identity = torch.eye(size, device=covariance.device)
    ridge = torch.diag(covariance).mean() * identity
    damp = INITIAL_DAMP
    while True:  # a rank-deficient covariance (few samples) needs a larger ridge to invert reliably
        damped = covariance + ridge * damp
        inverse = torch.linalg.inv(damped)
        if torch.dist(damped @ inverse, identity).item() < MAX_INVERSE_ERROR:
            break
        damp *= 2
    u, s, vh = torch.linalg.svd(weight @ damped, full_matrices=False)
    v = (vh @ inverse).T
    if not 0 < rank <= s.shape[0]:
        raise ConfigError(f"CorDA rank {rank} must be between 1 and min(out, in) = {s.shape[0]}.")
    keep = slice(None, rank) if method == "ipm" else slice(s.shape[0] - rank, None)
    return CordaEigens(S_WC=s[keep].clone(), U_WC=u[:, keep].clone(), V_WC=v[:, keep].clone())
