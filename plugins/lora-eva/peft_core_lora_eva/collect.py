"""Forward hooks that watch a layer's inputs: one to spot layers fed the same tensor, one for the PCA.

Both turn whatever the layer received into a 2-d ``(rows, features)`` tensor with a
*prepare* function (by default: the real tokens of a language-model batch), and, under
``torch.distributed``, gather the rows of every rank so each rank fits the same PCA.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist

from peft_core.errors import ConfigError
from peft_core.pca import IncrementalPCA

#: EVA's randomised SVD is seeded so that the same calibration batches give the same adapter
PCA_SEED = 42


def forward_fn_dict(model: torch.nn.Module, inputs: Mapping[str, Any]) -> Any:
    """Run the model on a batch dict (the default ``forward_fn``)."""
    return model(**inputs)


def prepare_model_inputs_fn_language_modeling(model_input: Any, peft_config: Any) -> torch.Tensor:
    """``(batch, position)`` indices of the tokens EVA learns from: unpadded, and with a real label if asked.

    Padding (``attention_mask == 0``) never counts; with ``eva_config.use_label_mask``, positions
    whose label is ``label_mask_value`` (prompts in instruction data) are left out too.
    """
    if not isinstance(model_input, Mapping):
        raise ConfigError("the default prepare_model_inputs_fn takes batches that are dicts (input_ids, attention_mask, "
                          "labels); pass prepare_model_inputs_fn=None or your own function for other batches.")
    mask = model_input.get("attention_mask", torch.ones_like(model_input["input_ids"])).bool()
    eva = peft_config.eva_config
    if eva.use_label_mask and "labels" in model_input:
        mask = mask & (model_input["labels"] != eva.label_mask_value)
    return mask.nonzero()


def _first_tensor(layer_input: Any, layer_name: str) -> torch.Tensor:
    if isinstance(layer_input, (tuple, list)):
        layer_input = layer_input[0]
    if not isinstance(layer_input, torch.Tensor):
        raise ConfigError(f"layer {layer_name!r} received a {type(layer_input).__name__}, not a tensor; pass a "
                          "prepare_layer_inputs_fn that returns its (rows, features) inputs.")
    return layer_input


def prepare_layer_inputs_fn_language_modeling(layer_input: Any, model_input: torch.Tensor, layer_name: str) -> torch.Tensor:
    """The rows of a layer's ``(batch, seq, features)`` input at the positions the model-input step kept."""
    return _first_tensor(layer_input, layer_name)[model_input.T.unbind()]


def _all_rows(layer_input: Any, model_input: Any, layer_name: str) -> torch.Tensor:
    """Every position of the input as one row (``prepare_layer_inputs_fn=None``)."""
    x = _first_tensor(layer_input, layer_name)
    return x.reshape(-1, x.shape[-1]) if x.dim() > 2 else x


def _gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order (ranks may hold different row counts)."""
    world = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = torch.empty(world, dtype=count.dtype, device=rows.device)
    dist.all_gather_into_tensor(counts, count)
    sizes = counts.tolist()
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class InputHook:
    """Base of the two hooks: prepares (and gathers) the rows of one layer's input."""

    def __init__(self, name: str, prepare_fn: Callable | None, gather: bool) -> None:
        self.name = name
        self.prepare_fn = prepare_fn if prepare_fn is not None else _all_rows
        self.gather = gather
        self.model_input: Any = None  # what prepare_model_inputs_fn made of the current batch

    @torch.no_grad()
    def rows(self, layer_input: Any) -> torch.Tensor:
        rows = self.prepare_fn(layer_input, self.model_input, self.name)
        if self.gather and dist.is_available() and dist.is_initialized():
            rows = _gather_rows(rows)
        return rows


class FingerprintHook(InputHook):
    """Records a digest of the first input it sees, so layers fed the same tensor share one PCA."""

    def __init__(self, name: str, prepare_fn: Callable | None, gather: bool) -> None:
        super().__init__(name, prepare_fn, gather)
        self.fingerprint: str | None = None

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self.fingerprint is None:
            rows = self.rows(args).detach().cpu().contiguous()
            digest = hashlib.sha256(str((rows.dtype, tuple(rows.shape))).encode())
            digest.update(rows.view(torch.uint8).numpy().tobytes() if rows.numel() else b"")
            self.fingerprint = digest.hexdigest()


class PCAHook(InputHook):
    """Folds each batch of a layer's inputs into an incremental PCA and tracks convergence.

    A component has converged when its cosine similarity with the previous batch's estimate
    is at least ``tau``; ``converged`` holds that flag per component.
    """

    def __init__(self, name: str, prepare_fn: Callable | None, gather: bool, n_components: int, tau: float) -> None:
        super().__init__(name, prepare_fn, gather)
        self.n_components = n_components
        self.tau = tau
        self.pca = IncrementalPCA(n_components=n_components, lowrank=True, lowrank_seed=PCA_SEED)
        self.converged = torch.zeros(n_components, dtype=torch.bool)

    @torch.no_grad()
    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        rows = self.rows(args)
        if rows.shape[0] < self.n_components:
            warnings.warn(f"EVA: skipping a batch for {self.name}: {rows.shape[0]} usable rows is fewer than the "
                          f"{self.n_components} components sought.", UserWarning, stacklevel=2)
            return
        previous = self.pca.components_.clone() if self.pca.fitted else None
        self.pca.partial_fit(rows.to(torch.float32))
        if previous is not None:
            current = self.pca.components_
            similarity = torch.nn.functional.cosine_similarity(current, previous.to(current.dtype), dim=1)
            self.converged = (similarity >= self.tau).cpu()
