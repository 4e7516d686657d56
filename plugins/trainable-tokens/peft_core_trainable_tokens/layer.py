"""The trainable tokens layer: selected rows of an embedding matrix are replaced by trained ones.

An adapter holds ``trainable_tokens_delta[<adapter>]``, one trained row per token id in
``token_indices`` (despite PEFT's name, the rows *replace* the base rows, they are not added
to them). Replacing instead of adding keeps the adapter meaningful when the embedding is
resized and the new rows re-drawn: the trained value of a token never depends on the base row.

The layer also wraps a linear output head that shares its weight with the embedding (tied
word embeddings): such a layer is *tied* to the embedding's layer and uses its tensors, so a
token's trained row is both its input embedding and its output projection.

Merging writes the trained rows into the base weight; unmerging writes back the rows that
were there when the adapter was created. Several active adapters must use disjoint tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft_core.errors import ConfigError, MergeError
from peft_core.layer import AdapterLayer, base_of
from peft_core.weights import EMBEDDING, LayerDescription, dense_weight

from .config import check_token_indices


class TrainableTokensLayer(AdapterLayer):
    """Per adapter: the token ids it trains and their trained rows; the active adapters' rows stand in for the base's."""

    method = "TRAINABLE_TOKENS"
    adapter_layer_names = ("trainable_tokens_delta",)
    other_param_names = ("token_indices", "trainable_tokens_original")

    def __init__(self, base_layer: nn.Module, description: LayerDescription,
                 tied_to: TrainableTokensLayer | None = None) -> None:
        super().__init__(base_layer, description)
        if tied_to is None:
            self.trainable_tokens_delta = nn.ParameterDict()
        else:  # the same containers as the embedding's layer: one set of trained rows serves both
            self.trainable_tokens_delta = tied_to.trainable_tokens_delta
            self.__dict__["token_indices"] = tied_to.token_indices
            self.__dict__["trainable_tokens_original"] = tied_to.trainable_tokens_original
        # kept out of the module tree: the embedding's layer is saved and moved where it lives
        self.__dict__["tied_to"] = tied_to

    @property
    def vocab_size(self) -> int:
        d = self.description
        return d.in_features if d.kind == EMBEDDING else d.out_features

    def update_layer(self, adapter_name: str, config: Any, token_indices: Sequence[int] | None = None,
                     init_weights: bool | None = None, **kwargs: Any) -> None:
        """Create the adapter's rows: copies of the current rows (``init_weights``) or random ones.

        ``token_indices``/``init_weights`` override the config's (a LoRA adapter passes its
        ``trainable_token_indices``). A tied layer creates nothing: the embedding's layer does.
        """
        if self.tied_to is not None:
            return
        indices = list(config.token_indices if token_indices is None else token_indices)
        check_token_indices(indices, "token_indices")
        if max(indices) >= self.vocab_size:
            raise ConfigError(f"token index {max(indices)} is out of range for an embedding of {self.vocab_size} "
                              "tokens; resize the embedding first (model.resize_token_embeddings) or fix the indices.")
        init = config.init_weights if init_weights is None else init_weights
        rows = self.token_rows(dense_weight(self.base_layer))
        index = torch.tensor(indices, device=rows.device)
        originals = rows.index_select(0, index).detach().clone()
        values = originals.clone() if init else torch.randn(originals.shape, dtype=rows.dtype, device=rows.device)
        self.token_indices[adapter_name] = indices
        self.trainable_tokens_original[adapter_name] = originals
        self.trainable_tokens_delta[adapter_name] = nn.Parameter(values)

    # -- rows of the weight ---------------------------------------------------------------

    def token_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The ``(vocab, dim)`` view of a canonical weight (an embedding's is stored ``(dim, vocab)``)."""
        return weight.T if self.description.kind == EMBEDDING else weight

    def _index(self, adapter_name: str, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.token_indices[adapter_name], device=device)

    def _with_rows(self, weight: torch.Tensor, adapter_name: str, rows: torch.Tensor) -> torch.Tensor:
        index = self._index(adapter_name, weight.device)
        replaced = self.token_rows(weight).index_copy(0, index, rows.to(weight))
        return self.token_rows(replaced)

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        return self._with_rows(weight, adapter_name, self.trainable_tokens_delta[adapter_name].detach())

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        return self._with_rows(weight, adapter_name, self.trainable_tokens_original[adapter_name])

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        base = dense_weight(self.base_layer)
        return self.merged_weight(base, adapter_name) - base

    # -- forward --------------------------------------------------------------------------

    def check_disjoint(self, adapter_names: Sequence[str]) -> None:
        """Two adapters training the same token would each claim its row: refuse, as PEFT does."""
        seen: dict[int, str] = {}
        for name in dict.fromkeys([*self.merged_adapters, *adapter_names]):
            for index in self.token_indices.get(name, ()):
                if index in seen and seen[index] != name:
                    raise ConfigError(f"adapters {seen[index]!r} and {name!r} both train token {index}; adapters used "
                                      "together (active or merged) must train disjoint token_indices.")
                seen[index] = name

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(self._active_adapters) > 1 and not self._disable_adapters:
            self.check_disjoint(self._active_adapters)
        return super().forward(x, *args, **kwargs)

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        names = list(self._active_adapters if adapter_names is None else adapter_names)
        self.check_disjoint(names)
        if safe_merge:
            for name in names:
                if name in self.trainable_tokens_delta and not torch.isfinite(self.trainable_tokens_delta[name]).all():
                    raise MergeError(f"adapter {name!r} has NaN/inf token rows; nothing was merged.")
        super().merge(safe_merge=safe_merge, adapter_names=names)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        delta = self.trainable_tokens_delta[adapter_name]
        index = self._index(adapter_name, result.device)
        if self.description.kind == EMBEDDING:
            return self._replace_looked_up_rows(x, result, index, delta)
        # an output head: the trained rows give the logits of their tokens
        logits = F.linear(x.to(delta.dtype), delta)
        bias = getattr(base_of(self.base_layer), "bias", None)
        if bias is not None:
            logits = logits + bias.index_select(0, index).to(logits.dtype)
        return result.index_copy(result.dim() - 1, index, logits.to(result.dtype))

    def _replace_looked_up_rows(self, ids: torch.Tensor, result: torch.Tensor, index: torch.Tensor,
                                delta: torch.Tensor) -> torch.Tensor:
        """Where an input id is one of the adapter's tokens, its trained row replaces the looked-up one.

        A sorted search instead of a vocabulary-sized lookup table: the cost follows the
        batch and the number of trained tokens, not the vocabulary.
        """
        order = torch.argsort(index)
        ordered = index[order]
        slot = torch.searchsorted(ordered, ids).clamp(max=len(ordered) - 1)
        hit = ordered[slot] == ids
        rows = delta[order[slot]]
        scale = getattr(base_of(self.base_layer), "embed_scale", None)  # scaled embeddings (Gemma) scale every row
        if isinstance(scale, torch.Tensor):
            rows = rows * scale.to(rows.dtype)
        elif isinstance(scale, (int, float)):
            rows = rows * scale
        return torch.where(hit.unsqueeze(-1), rows.to(result.dtype), result)


def create_trainable_tokens_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> TrainableTokensLayer:
    """The ``MethodSpec.layer_factory`` of trainable tokens."""
    layer = TrainableTokensLayer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
