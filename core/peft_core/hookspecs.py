"""The hook contract between the peft-core core and its plugins.

This module *is* the contract: every hook a plugin may implement is declared here, with
its arguments, what it returns and when the core calls it. Plugins implement hooks with
``@peft_core.hookimpl``; the argument names must match the spec (pluggy checks them, and
a hook name that exists in no spec makes loading fail loudly).

Hooks come in groups:

* **config** — a plugin registers its methods, validates and upgrades configs;
* **tuner layer** — what a base module is, how to read and write its weight as a dense
  tensor (quantization backends implement these so that merging works for every method on
  every backend), and how to build an adapter layer;
* **serialization** — method-specific key/tensor mapping around the shared on-disk format;
* **training** — a method adds a term to the loss (a regulariser) in the forward pass;
* **input transform** — prompt-learning methods change the model's inputs (virtual-token
  embeddings) or its attention cache (``past_key_values``) instead of wrapping layers; the
  core (:mod:`peft_core.prompt`) does the plumbing every such method shares;
* **conformance** — the Hypothesis strategies a method contributes to the shared suite;
* **combining and hot-swapping** — the method-specific half of ``add_weighted_adapter`` and
  ``hotswap_adapter`` (the core owns the math utilities, validation and rollback);
* **meta** — a plugin adds hook specs of its own (LoRA declares a *variant* hook that
  other plugins implement).

All hooks take keyword arguments only; ``firstresult`` hooks stop at the first
implementation returning something other than ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import PeftConfig
    from .registry import MethodRegistry, MethodSpec
    from .weights import LayerDescription

PROJECT = "peft_core"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- config ------------------------------------------------------------------------------


@hookspec
def peft_core_register_methods(registry: MethodRegistry) -> None:
    """Add the plugin's methods with ``registry.register(MethodSpec(...))``.

    Called once, when the plugin manager first loads the plugins. A method name (the
    on-disk ``peft_type``) or state-dict prefix already taken by another plugin raises
    :class:`~peft_core.errors.DuplicateMethodError`; the plugin is then reported and
    skipped (re-raised when ``PEFT_CORE_STRICT_PLUGINS=1``).
    """


@hookspec
def peft_core_validate_config(config: PeftConfig, model: nn.Module) -> list[str] | None:
    """Return problems (plain sentences) with using ``config`` on ``model``, or nothing.

    Called by ``get_peft_model``/``add_adapter``/``load_adapter`` before any module is
    touched. The core collects the problems of every implementation and raises one
    :class:`~peft_core.errors.ConfigError` listing them all, so the model is never changed
    by an invalid config.
    """


@hookspec
def peft_core_upgrade_config(config_dict: dict[str, Any]) -> None:
    """Migrate an older or foreign ``adapter_config.json`` dict in place.

    Called on the raw dict before a config class is chosen and constructed, so a plugin
    can rename fields, fill values older writers did not store, or refuse a layout it
    cannot read (by raising a :class:`~peft_core.errors.ConfigError` saying why).
    """


# -- tuner layer -------------------------------------------------------------------------


@hookspec(firstresult=True)
def peft_core_describe_layer(module: nn.Module) -> LayerDescription | None:
    """Describe a base module: its kind, features and weight layout; ``None`` if unknown.

    The core asks this for each targeted module before building an adapter layer. The
    built-in implementation knows ``torch.nn`` linear, convolution, embedding and norm
    layers and transformers' ``Conv1D``; a quantization backend describes its quantized
    layers (``tryfirst`` is not needed: the built-in one is ``trylast``).
    """


@hookspec(firstresult=True)
def peft_core_dense_weight(module: nn.Module) -> torch.Tensor | None:
    """Return a dense, detached copy or view of ``module``'s weight in ``(out, in, *kernel)`` layout.

    Called only to merge, unmerge or initialise from the base weight, never in the
    forward pass. Layouts that store the weight transposed (``Conv1D``) are returned
    in the canonical layout; quantized layers return the dequantized weight.
    """


@hookspec(firstresult=True)
def peft_core_write_dense_weight(module: nn.Module, weight: torch.Tensor) -> bool | None:
    """Write ``weight`` (canonical layout, as from ``peft_core_dense_weight``) into ``module``.

    Return ``True`` when handled. Quantization backends requantize, keeping the
    module's quantization settings; the rounding this causes is theirs to document.
    """


@hookspec(firstresult=True)
def peft_core_create_adapter_layer(
    spec: MethodSpec,
    target: nn.Module,
    module_name: str,
    description: LayerDescription,
    config: PeftConfig,
    adapter_name: str,
) -> nn.Module | None:
    """Build the adapter layer that wraps ``target`` (at ``module_name``) for a new adapter.

    The default implementation calls ``spec.layer_factory(target, description, config,
    adapter_name, module_name=module_name)``. A plugin implements this to
    provide special layers for module types it knows (``None`` leaves it to others).
    """


# -- serialization -----------------------------------------------------------------------


@hookspec
def peft_core_state_dict_pre_save(
    spec: MethodSpec, config: PeftConfig, adapter_name: str, model: nn.Module, state_dict: dict[str, torch.Tensor]
) -> None:
    """Adjust the adapter state dict in place just before it is written.

    ``state_dict`` already holds the keys in the on-disk form (``base_model.model.<path>.
    <attr>...`` with the adapter name removed), plus the adapter's persistent tuner-level
    tensors (``tuner.shared_tensors``, e.g. VeRA's projections) as ``base_model.<name>``.
    Methods rename, reshape or add tensors here (AdaLoRA cuts pruned ranks out).
    """


@hookspec
def peft_core_state_dict_post_load(
    spec: MethodSpec, config: PeftConfig, adapter_name: str, model: nn.Module, state_dict: dict[str, torch.Tensor]
) -> None:
    """Adjust a loaded state dict in place before its keys are matched to the model.

    The mirror image of ``peft_core_state_dict_pre_save``: map older key names, move
    tensors that live outside layers, or raise :class:`~peft_core.errors.LoadError`.
    """



@hookspec(firstresult=True)
def peft_core_convert_for_initial_model(
    spec: MethodSpec, config: PeftConfig, adapter_name: str, model: nn.Module,
    state_dict: dict[str, torch.Tensor], initial_dir: str,
) -> tuple[dict[str, torch.Tensor], PeftConfig] | None:
    """Rewrite an adapter whose initialisation changed the base weights into one for the *original* base.

    Called by ``save_pretrained(..., path_initial_model_for_weight_conversion=initial_dir)``
    for each saved adapter, with its on-disk state dict and the config about to be written;
    ``initial_dir`` holds the same adapter as saved right after initialisation, before any
    training. Initialisations that move part of the base weight into the factors (PiSSA,
    OLoRA, …) cannot be applied to the original base as they are; their plugin returns
    ``(state_dict, config)`` of an equivalent plain adapter (for LoRA, rank ``2r``) that
    gives the fine-tuned model's outputs on the original base. ``None`` means "not mine";
    when every implementation says so, the core refuses the conversion.
    """

# -- training ----------------------------------------------------------------------------


@hookspec
def peft_core_extra_loss(spec: MethodSpec, config: PeftConfig, adapter_name: str, tuner: nn.Module,
                         outputs: Any) -> torch.Tensor | None:
    """Return a term to add to the model's loss for adapter ``adapter_name``, or ``None``.

    Called by ``PeftModel.forward`` after the base model ran, only when its output carries a
    tensor ``loss`` (labels were given), once per adapter whose config is not in inference
    mode. The core adds every returned term to ``outputs.loss``, so a regulariser of a method
    (AdaLoRA's orthogonality penalty) reaches the gradients without a custom training loop.
    """


# -- input transform ---------------------------------------------------------------------


@hookspec(firstresult=True)
def peft_core_create_prompt_encoder(spec: MethodSpec, config: PeftConfig, adapter_name: str,
                                    word_embeddings: nn.Module) -> nn.Module | None:
    """Build the module that produces adapter ``adapter_name``'s virtual tokens, or ``None`` if not ours.

    Called when a prompt-learning adapter (``config.is_prompt_learning``) is added, after the
    shape fields of ``config`` were filled from the model. The module must follow
    :class:`peft_core.prompt.PromptEncoder`: an ``embedding`` (``nn.Embedding``) holding the
    prompt in its saved form, ``forward(indices)`` giving ``(batch, tokens, width)``, and the
    class attribute ``injects`` saying where the prompt goes — ``"embeddings"`` (prepended to
    the input embeddings; width ``token_dim``) or ``"past_key_values"`` (a prefix of every
    attention layer's cache; width ``num_layers * 2 * token_dim``). The core then extends
    ``attention_mask``, pads ``labels``/``token_type_ids``, injects the prompt on the first
    generation step only, and saves the materialized prompt as ``prompt_embeddings``.
    ``word_embeddings`` is the model's input embedding (for initialising from vocabulary).
    """


@hookspec(firstresult=True)
def peft_core_prompt_cache(config: PeftConfig, model: nn.Module, keys_values: list[tuple[torch.Tensor, torch.Tensor]],
                           encoder_decoder: bool) -> Any:
    """Return the transformers ``Cache`` holding a prefix for ``model``, or ``None`` for the default.

    ``keys_values`` has one ``(key, value)`` pair per attention layer, each shaped ``(batch,
    heads, num_virtual_tokens, head_dim)``. The default (when every implementation returns
    ``None``) is a ``DynamicCache`` built from the model's config, wrapped in an
    ``EncoderDecoderCache`` with an empty cross-attention cache for encoder-decoder models.
    Implement this for architectures whose cache needs another layout.
    """


# -- conformance -------------------------------------------------------------------------


@hookspec(firstresult=True)
def peft_core_conformance_cases(method: str) -> Any:
    """Return the conformance cases for ``method`` (a ``peft_type``), or ``None`` if not ours.

    The value is a :class:`peft_core.conformance.MethodCases`: Hypothesis strategies for
    valid configs (and for invalid ones), and which base models the method can adapt.
    """


@hookspec
def peft_core_conformance_model_kinds() -> list[Any] | None:
    """Return extra :class:`~peft_core.conformance.strategies.ModelKind` objects for the suite, or nothing.

    A backend plugin contributes variants of the built-in tiny models (a quantization backend:
    ``tiny_llama`` with its linears quantized). A kind names the float kind it derives from and
    the capability a method must declare to be tested on it; every such method then runs the
    suite on it with its configs for the float kind. A kind whose merges round says so
    (``lossy_merge``): its merge checks compare weights within :func:`peft_core_weight_rounding`.
    """


@hookspec(firstresult=True)
def peft_core_weight_rounding(module: nn.Module, weight: torch.Tensor) -> torch.Tensor | None:
    """Elementwise bound on ``|dense_weight(module) - weight|`` right after writing ``weight`` into ``module``.

    The documented rounding of a merge into a layer that stores its weight lossily (a
    quantized layer); ``None`` for layers a plugin does not know (they store weights exactly).
    The conformance suite's merge checks use it as their tolerance on quantized models.
    """


# -- combining and hot-swapping ----------------------------------------------------------


@hookspec(firstresult=True)
def peft_core_combine_adapters(spec: MethodSpec, configs: list[PeftConfig], combination: Any) -> Any:
    """Return an :class:`~peft_core.merging.AdapterCombiner` for ``spec``'s adapters, or ``None`` if not ours.

    Called by ``add_weighted_adapter`` after the core has validated the request
    (``combination`` is a :class:`~peft_core.merging.Combination`: adapter names, weights,
    combination type, SVD and pruning settings) and checked that the method declares
    ``Capability.WEIGHTED_COMBINE``. ``configs`` are the configs of the adapters being
    combined, in order. The combiner says what the new adapter's config is (its rank, its
    targets) and fills each layer's new tensors; the core does everything else (injecting
    the new adapter, rolling back on failure). Raise a
    :class:`~peft_core.errors.PeftCoreError` to refuse a combination the method cannot
    express (different ranks for ``linear``, a variant without a combined form, …). The
    tensor math is public in :mod:`peft_core.merging`, so implementations stay short.
    """


@hookspec(firstresult=True)
def peft_core_hotswap_support(spec: MethodSpec) -> Any:
    """Return a :class:`~peft_core.hotswap.HotswapSupport` for ``spec``, or ``None`` if not ours.

    Called by ``hotswap_adapter`` and ``prepare_model_for_compiled_hotswap`` for methods that
    declare ``Capability.HOTSWAP``. The core copies tensors in place (zero-padding smaller
    ones into larger, prepared ones); the support object supplies what only the method
    knows: which config fields must agree, how a layer's per-adapter numbers (LoRA's
    scaling) are rewritten in place, and how a layer is padded to a target rank with its
    numbers turned into tensors so that a compiled graph survives a swap.
    """


# -- meta --------------------------------------------------------------------------------


@hookspec(historic=True)
def peft_core_addhooks(plugin_manager: pluggy.PluginManager) -> None:
    """Add hook specs of the plugin's own with ``plugin_manager.add_hookspecs(module)``.

    Historic: a plugin loaded later still receives the call. This is how one plugin
    opens an extension point for others (the LoRA plugin's variant hooks).
    """
