"""Hooks the LoRA plugin opens for other plugins: *variants* (DoRA, …) and *extensions*.

A variant changes how one adapter of a LoRA layer is applied and merged while keeping
LoRA's parameters and on-disk keys. An extension serves a ``LoraConfig`` field or an
``init_lora_weights`` value that plain LoRA leaves alone (PiSSA, EVA, trainable tokens, …):
it says which ones it serves, so the LoRA plugin accepts them, and initialises the factors
of the adapters that ask for it. The LoRA plugin adds these specs through
``peft_core_addhooks``; other plugins implement them with ``@peft_core.hookimpl``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from peft_core.hookspecs import hookspec


class LoraVariant(Protocol):
    """What a variant object provides; the layer calls it instead of the plain LoRA math."""

    #: extra per-adapter attributes the variant adds to the layer (saved like LoRA's own)
    adapter_layer_names: tuple[str, ...]

    def init(self, layer: Any, adapter_name: str, config: Any) -> None:
        """Create the variant's parameters after LoRA's own are initialised."""

    def apply(self, layer: Any, adapter_name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """Return ``result`` (the base output) with the adapter applied.

        Call the factor modules, or use their weights directly only when
        ``layer.hook_free_factors(adapter_name)`` returns them (hooks on factors must fire).
        """

    def merged_weight(self, layer: Any, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        """The base weight with this adapter merged in (canonical layout)."""

    def unmerged_weight(self, layer: Any, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`merged_weight`."""


@hookspec(firstresult=True)
def peft_core_lora_variant(config: Any, layer_kind: str) -> LoraVariant | None:
    """Return the variant object for a ``LoraConfig`` on a layer of ``layer_kind``, or ``None``.

    Called once per adapter and layer when the adapter is created. ``None`` from every
    implementation means plain LoRA.
    """


@hookspec
def peft_core_lora_variant_flags() -> dict[str, str] | None:
    """Return ``{config field: distribution}`` for variant switches this plugin serves.

    Lets the LoRA plugin tell a user who sets ``use_dora=True`` which package to install
    when no plugin claims that flag.
    """


@hookspec
def peft_core_lora_extensions() -> dict[str, Any] | None:
    """Return what this plugin serves: ``{"inits": [...], "fields": [...]}``.

    ``inits`` are ``init_lora_weights`` values (a string ending in ``_`` is a prefix:
    ``"pissa_niter_"`` serves ``"pissa_niter_16"``); ``fields`` are ``LoraConfig`` fields whose
    non-default values the plugin handles (``"eva_config"``). Anything no plugin serves is
    refused by the LoRA plugin with the distribution to install.
    """


@hookspec(firstresult=True)
def peft_core_lora_init(layer: Any, adapter_name: str, config: Any, init: Any) -> bool | None:
    """Initialise the factors of ``adapter_name`` on ``layer`` for ``init_lora_weights=init``.

    Called after the factors are created, for values other than ``True``, ``False`` and
    ``"gaussian"``. Return ``True`` when handled. An implementation may also change the base
    weight through :func:`peft_core.weights.write_dense_weight` (PiSSA writes back the residual).
    """


@hookspec
def peft_core_lora_adapter_injected(tuner: Any, config: Any, adapter_name: str) -> None:
    """Called once the layers of LoRA adapter ``adapter_name`` are in place (LoRA's ``MethodSpec.init_shared``).

    An extension that puts further modules under the same adapter does it here: trainable
    tokens wraps the embeddings named by ``LoraConfig.trainable_token_indices``. The layers it
    adds hold the adapter under ``adapter_name``, so activating, deleting, merging and saving
    the adapter treat them with its LoRA layers. An implementation does nothing for configs
    that do not ask for it; if it raises, the adapter is removed again.
    """


class TokenWeights(Protocol):
    """A per-layer provider of per-token weights for each adapter's low-rank path.

    Not a pluggy hook: it is asked on every forward of the one layer it is installed on
    (``LoraLayer.set_token_weights(provider)``), so a layer without one pays a single
    ``is None`` test. A mixture of LoRA experts (X-LoRA) installs one per layer to weigh
    each expert per token. For a Linear/Conv layer the returned weight multiplies the
    adapter's input (before dropout and ``A``), for an Embedding the looked-up rows of
    ``lora_embedding_A``; as ``A`` is linear without bias both scale the rank-``r`` hidden
    ``A(dropout(x))`` by the weight. Refused for adapters with a variant (DoRA).
    """

    def __call__(self, layer: Any, adapter_name: str, x: torch.Tensor) -> torch.Tensor | None:
        """Weights broadcastable to ``x``'s token dims with a trailing 1 (``(batch, seq, 1)``), or ``None``.

        ``x`` is the layer's input (token ids for an embedding). ``None`` applies the
        adapter as plain LoRA (e.g. an adapter that is not one of the experts).
        """
