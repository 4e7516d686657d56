"""Prompt learning: adapters that change a model's inputs or attention cache instead of its layers.

Prompt tuning, P-tuning and prefix tuning add no adapter layers. Each adapter owns a *prompt
encoder* (built by the method through ``peft_core_create_prompt_encoder``) whose output is
either prepended to the input embeddings (``injects = "embeddings"``) or becomes a prefix of
every attention layer's key/value cache (``injects = "past_key_values"``). Everything else is
the same for every such method and lives here once: extending ``attention_mask``, padding
``labels`` and ``token_type_ids``, building the transformers ``Cache``, injecting only on the
first generation step, and saving the materialized prompt as ``prompt_embeddings`` the way
Hugging Face PEFT does.

:class:`PromptLearningTuner` is the ``PeftModel.base_model`` of such adapters: the same
bookkeeping as :class:`~peft_core.tuner.AdapterModel` (configs, activity, ``modules_to_save``
heads), with the prompt applied in its ``forward`` and ``generate``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from .config import PeftConfig, PromptLearningConfig, TaskType
from .errors import AdapterNameError, ConfigError, UnsupportedOperation
from .names import validate_adapter_name
from .plugins import hook, registry
from .registry import Capability
from .tuner import AdapterModel

EMBEDDINGS = "embeddings"
PAST_KEY_VALUES = "past_key_values"
#: the on-disk key of the materialized prompt (PEFT's)
PROMPT_KEY = "prompt_embeddings"
#: tasks whose token_type_ids are kept (padded with zeros for virtual tokens) instead of dropped
_KEEPS_TOKEN_TYPES = {TaskType.SEQ_CLS, TaskType.TOKEN_CLS, TaskType.QUESTION_ANS}

#: what every prompt-learning method supports: switching adapters and running the base alone
PROMPT_LEARNING_CAPABILITIES = frozenset({Capability.DISABLE, Capability.MULTI_ADAPTER, Capability.INPUT_TRANSFORM})
#: why the rest is not supported (shown in the UnsupportedOperation message)
PROMPT_LEARNING_UNSUPPORTED = {
    Capability.MERGE: "a prompt changes the inputs, not the weights; there is nothing to merge",
    Capability.UNLOAD: "the model itself is never modified; use model.get_base_model() (heads trained with "
                       "modules_to_save stay wrapped)",
    Capability.MULTI_ACTIVE: "one prompt is prepended at a time; switch with set_adapter",
    Capability.MIXED_BATCH: "every row of a batch gets the active adapter's prompt",
    Capability.IDENTITY_AT_INIT: "virtual tokens change the output from the start",
    Capability.WEIGHTED_COMBINE: "prompts of different adapters cannot be combined",
    Capability.HOTSWAP: "swap prompts with load_adapter/set_adapter",
    Capability.MIXED_METHODS: "adapters on one prompt-learning model must all use the same method",
    Capability.QUANTIZED_BASE: "not verified on quantized models",
}
#: the three prompt-learning methods all save ``prompt_embeddings`` and never share a model
PROMPT_LEARNING_METHODS = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING")


class PromptEncoder(nn.Module):
    """Base class of prompt encoders: ``embedding`` holds the prompt in its saved form.

    ``forward(indices)`` returns the prompt a training adapter uses; an adapter loaded for
    inference uses ``embedding.weight`` directly (the materialized prompt that was saved), so
    a reparameterization network (P-tuning's MLP) is only needed while training.
    """

    injects: ClassVar[str] = EMBEDDINGS
    embedding: nn.Embedding

    def materialize(self, indices: torch.Tensor, inference_mode: bool) -> torch.Tensor:
        """The prompt for one row, ``(tokens, width)``."""
        if inference_mode:
            return self.embedding.weight[: indices.shape[0]]
        return self(indices.unsqueeze(0))[0]


def find_word_embeddings(model: nn.Module) -> nn.Module:
    """The model's input token embedding (what virtual tokens live next to)."""
    getter = getattr(model, "get_input_embeddings", None)
    emb = getter() if callable(getter) else None
    if isinstance(emb, nn.Module) and hasattr(emb, "weight"):
        return emb
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings == vocab:
            return module
    raise ConfigError("cannot find the model's input embeddings (no get_input_embeddings() and no Embedding of "
                      "vocab_size rows); prompt-learning methods need a transformers-style model.")


class PromptLearningTuner(AdapterModel):
    """``PeftModel.base_model`` for prompt-learning adapters: encoders per adapter, inputs transformed."""

    #: heads trained next to a prompt (modules_to_save) are stored under ``base_model.<path>`` as in PEFT
    disk_prefix = "base_model."

    def __init__(self, model: nn.Module, peft_config: PeftConfig | dict[str, PeftConfig], adapter_name: str = "default",
                 autocast_adapter_dtype: bool = True, low_cpu_mem_usage: bool = False) -> None:
        # set before AdapterModel.__init__ adds the first adapter (plain attributes survive Module.__init__)
        self.__dict__.update(prompt_tokens={}, _prompt_enabled=True,
                             word_embeddings=find_word_embeddings(model))  # the model's own module: not registered twice
        super().__init__(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)

    # -- adapters -------------------------------------------------------------------------

    def inject_adapter(self, config: PeftConfig, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """Add a prompt adapter: fill shapes from the model, build its encoder, wrap heads; all-or-nothing."""
        validate_adapter_name(adapter_name, self._prefixes())
        if adapter_name in self.peft_config:
            raise AdapterNameError(f"an adapter named {adapter_name!r} already exists; pick another name or delete it first.")
        spec = registry().for_config(config)
        if not isinstance(config, PromptLearningConfig):
            raise UnsupportedOperation(f"{spec.name} adapters wrap layers; they cannot be added to a model holding "
                                       "prompt-learning adapters.")
        if self.peft_config:
            spec.require(Capability.MULTI_ADAPTER, "adding a second adapter")
            others = {self.spec_for(n).name for n in self.peft_config}
            if others != {spec.name}:
                raise UnsupportedOperation(f"a {spec.name} adapter cannot be added next to {sorted(others)} adapters: "
                                           "prompt-learning adapters on one model must use the same method.")
        if config.task_type is None:
            raise ConfigError(f"{type(config).__name__} needs task_type (e.g. 'CAUSAL_LM', 'SEQ_2_SEQ_LM', 'SEQ_CLS'): "
                              "it decides how the virtual tokens enter the model.")
        model_config = getattr(self.model, "config", None)
        if model_config is None:
            raise ConfigError("prompt-learning methods need a transformers model (one with a .config).")
        config.fill_from_model(model_config)
        problems = [p for ps in hook().peft_core_validate_config(config=config, model=self.model) if ps for p in ps]
        if problems:
            raise ConfigError(f"invalid {type(config).__name__} for this model: " + "; ".join(problems))
        encoder = hook().peft_core_create_prompt_encoder(spec=spec, config=config, adapter_name=adapter_name,
                                                         word_embeddings=self.word_embeddings)
        if encoder is None:
            raise UnsupportedOperation(f"no plugin builds a prompt encoder for {spec.name}.")
        if "prompt_encoder" not in self._modules:
            self.prompt_encoder = nn.ModuleDict()
        weight = self.word_embeddings.weight
        dtype = weight.dtype
        if not dtype.is_floating_point or (autocast_adapter_dtype and dtype in (torch.float16, torch.bfloat16)):
            dtype = torch.float32
        self.prompt_encoder[adapter_name] = encoder.to(device=weight.device, dtype=dtype)
        self.prompt_tokens[adapter_name] = torch.arange(config.num_virtual_tokens * config.num_transformer_submodules)
        self._wrap_modules_to_save(config, adapter_name)
        self.peft_config[adapter_name] = config
        self._layers_cache = None
        self._freeze_base()
        self.set_adapter(self._active or [adapter_name])

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        for name, encoder in self.prompt_encoder.items():
            trainable = name in self._active and not (self.peft_config[name].inference_mode or inference_mode)
            encoder.requires_grad_(trainable)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        del self.prompt_encoder[adapter_name]
        del self.prompt_tokens[adapter_name]

    def _set_enabled(self, enabled: bool) -> None:
        super()._set_enabled(enabled)
        self._prompt_enabled = enabled

    # -- the prompt -----------------------------------------------------------------------

    def get_prompt_embedding_to_save(self, adapter_name: str) -> torch.Tensor:
        """The materialized prompt of ``adapter_name`` as PEFT saves it: ``(tokens, width)``."""
        config = self._config(adapter_name)
        encoder = self.prompt_encoder[adapter_name]
        tokens = self.prompt_tokens[adapter_name].to(encoder.embedding.weight.device)
        if encoder.injects == PAST_KEY_VALUES:
            tokens = tokens[: config.num_virtual_tokens]
        with torch.no_grad():
            return encoder.materialize(tokens, config.inference_mode).detach()

    def tuner_entries(self, adapter_name: str) -> dict[str, tuple[str, torch.Tensor]]:
        """The saved prompt is loaded into the encoder's embedding (saving writes :meth:`materialized_state`)."""
        entries = super().tuner_entries(adapter_name)
        entries[PROMPT_KEY] = (f"base_model.prompt_encoder.{adapter_name}.embedding.weight",
                               self.prompt_encoder[adapter_name].embedding.weight)
        return entries

    def materialized_state(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """What saving writes instead of the live embedding: the prompt the adapter actually uses."""
        return {PROMPT_KEY: self.get_prompt_embedding_to_save(adapter_name)}

    def get_prompt(self, batch_size: int) -> Any:
        """The active adapter's prompt for a batch: embeddings ``(batch, tokens, dim)`` or a ``Cache``."""
        name = self._active[0]
        config, encoder = self.peft_config[name], self.prompt_encoder[name]
        tokens = self.prompt_tokens[name].to(encoder.embedding.weight.device)
        if encoder.injects == PAST_KEY_VALUES:
            tokens = tokens[: config.num_virtual_tokens]
        prompt = encoder.materialize(tokens, config.inference_mode)
        prompt = prompt.unsqueeze(0).expand(batch_size, -1, -1)
        if encoder.injects == EMBEDDINGS:
            return prompt
        return self._prefix_cache(config, prompt.to(self.word_embeddings.weight.dtype))

    def _prefix_cache(self, config: PromptLearningConfig, prompt: torch.Tensor) -> Any:
        batch, n = prompt.shape[:2]
        heads = config.num_attention_heads
        per_layer = prompt.view(batch, n, config.num_layers * 2, heads, config.token_dim // heads).permute(2, 0, 3, 1, 4)
        encoder_decoder = config.num_transformer_submodules == 2
        # Hugging Face PEFT lays an encoder-decoder prefix out as self- and cross-attention pairs
        # (the cross pair then discarded), so decoder layer i reads the pair stored at slot
        # 2i mod num_layers; following it keeps saved adapters interchangeable with PEFT's
        slots = [(2 * i) % config.num_layers if encoder_decoder else i for i in range(config.num_layers)]
        pairs = [(per_layer[2 * slot], per_layer[2 * slot + 1]) for slot in slots]
        cache = hook().peft_core_prompt_cache(config=config, model=self.model, keys_values=pairs,
                                              encoder_decoder=encoder_decoder)
        return cache if cache is not None else default_prompt_cache(self.model, pairs, encoder_decoder)

    # -- forward and generate -------------------------------------------------------------

    def _current(self) -> tuple[PromptLearningConfig, PromptEncoder] | None:
        if not self._prompt_enabled or not self._active:
            return None
        name = self._active[0]
        return self.peft_config[name], self.prompt_encoder[name]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            if len(args) > 1:
                raise ConfigError("pass model inputs other than input_ids by keyword to a prompt-learning model.")
            kwargs["input_ids"] = args[0]
        current = self._current()
        if current is None:
            return self.model(**kwargs)
        config, encoder = current
        return self.model(**self._with_prompt(config, encoder, kwargs))

    def _with_prompt(self, config: PromptLearningConfig, encoder: PromptEncoder, kwargs: dict[str, Any]) -> dict[str, Any]:
        n, task = config.num_virtual_tokens, TaskType(config.task_type)
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        batch = (ids if ids is not None else embeds).shape[0]
        seq2seq = task == TaskType.SEQ_2_SEQ_LM
        cache = encoder.injects == PAST_KEY_VALUES
        _adjust_positions_and_types(kwargs, n, cache, keep_types=task in _KEEPS_TOKEN_TYPES)
        if cache:
            mask_key = "decoder_attention_mask" if seq2seq else "attention_mask"
            kwargs[mask_key] = _prepend(kwargs.get(mask_key), n, 1)
            kwargs["past_key_values"] = self.get_prompt(batch)
            return kwargs
        kwargs["attention_mask"] = _prepend(kwargs.get("attention_mask"), n, 1)
        if task in (TaskType.CAUSAL_LM, TaskType.TOKEN_CLS):
            kwargs["labels"] = _prepend(kwargs.get("labels"), n, -100)
        if not seq2seq and task in _KEEPS_TOKEN_TYPES:
            kwargs["token_type_ids"] = _prepend(kwargs.get("token_type_ids"), n, 0)
        if embeds is None:
            embeds = self.word_embeddings(kwargs.pop("input_ids"))
        kwargs.pop("input_ids", None)
        prompt = self.get_prompt(batch)[:, :n].to(embeds.dtype)
        kwargs["inputs_embeds"] = torch.cat([prompt, embeds], dim=1)
        return kwargs

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``generate`` with the prompt injected on the first step only."""
        current = self._current()
        if current is None:
            return self.model.generate(*args, **kwargs)
        config, encoder = current
        if args:
            kwargs["input_ids"] = args[0]
        if kwargs.get("input_ids") is None:
            raise ConfigError("generate() of a prompt-learning model needs input_ids.")
        seq2seq = TaskType(config.task_type) == TaskType.SEQ_2_SEQ_LM
        if seq2seq:  # decoder-only models adjust these per step, in _generation_step
            _adjust_positions_and_types(kwargs, config.num_virtual_tokens, encoder.injects == PAST_KEY_VALUES,
                                        keep_types=False)
        if seq2seq and encoder.injects == EMBEDDINGS:  # the encoder runs once: give it the prompt up front
            return self.model.generate(**self._with_prompt(config, encoder, kwargs))
        model = self.model
        own = model.__dict__.get("prepare_inputs_for_generation")
        model.prepare_inputs_for_generation = functools.partial(
            self._generation_step, model.prepare_inputs_for_generation, config, encoder, seq2seq)
        try:
            return model.generate(**kwargs)
        finally:
            if own is None:
                del model.prepare_inputs_for_generation
            else:
                model.prepare_inputs_for_generation = own

    def _generation_step(self, prepare: Any, config: PromptLearningConfig, encoder: PromptEncoder, seq2seq: bool,
                         *args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = prepare(*args, **kwargs)
        n, cache_injection = config.num_virtual_tokens, encoder.injects == PAST_KEY_VALUES
        past = inputs.get("past_key_values")
        first = kwargs.get("is_first_iteration")
        if first is None:
            first = past is None or past.get_seq_length() == 0
        if seq2seq:  # only prefix tuning gets here: the decoder's self-attention cache starts with the prefix
            if first:
                inputs["past_key_values"] = self.get_prompt(inputs["decoder_input_ids"].shape[0])
            return inputs
        mask = inputs.get("attention_mask")
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
                raise UnsupportedOperation("prompt-learning generation needs a 2D attention mask; compiled/static "
                                           "caches that build 4D masks are not supported.")
            inputs["attention_mask"] = _prepend(mask, n, 1)
        _adjust_positions_and_types(inputs, n, cache_injection, keep_types=False, warn=False)
        if first:
            ids = inputs.get("input_ids")
            batch = (ids if ids is not None else inputs["inputs_embeds"]).shape[0]
            if cache_injection:
                inputs["past_key_values"] = self.get_prompt(batch)
            else:
                embeds = inputs.get("inputs_embeds")
                if embeds is None:
                    embeds = self.word_embeddings(ids)
                inputs["inputs_embeds"] = torch.cat([self.get_prompt(batch).to(embeds.dtype), embeds], dim=1)
                inputs["input_ids"] = None
        return inputs


def _prepend(tensor: torch.Tensor | None, n: int, value: int) -> torch.Tensor | None:
    """``tensor`` with ``n`` columns of ``value`` in front (for the virtual tokens), or ``None``."""
    if tensor is None:
        return None
    pad = torch.full((tensor.shape[0], n), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor], dim=1)


def _adjust_positions_and_types(kwargs: dict[str, Any], n: int, cache: bool, keep_types: bool,
                                warn: bool = True) -> None:
    """Positions shift past a cache prefix; with prepended embeddings they cannot be given (PEFT drops them).

    ``warn=False`` inside generation steps: there ``generate`` made the positions itself.
    """
    if kwargs.get("position_ids") is not None:
        if cache:
            kwargs["position_ids"] = kwargs["position_ids"] + n
        else:
            if warn:
                    warnings.warn("position_ids are ignored with prompt tuning: the virtual tokens shift every position.",
                              UserWarning, stacklevel=4)
            kwargs["position_ids"] = None
    if not keep_types and kwargs.get("token_type_ids") is not None:
        warnings.warn("token_type_ids are ignored for this task with prompt-learning methods.", UserWarning, stacklevel=4)
        kwargs["token_type_ids"] = None


def default_prompt_cache(model: nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]], encoder_decoder: bool) -> Any:
    """A ``DynamicCache`` holding the prefix (wrapped for encoder-decoder models, cross-attention left empty)."""
    from transformers import DynamicCache, EncoderDecoderCache

    config = getattr(model, "config", None)
    cache = DynamicCache(config=config) if config is not None and not encoder_decoder else DynamicCache()
    for layer, (key, value) in enumerate(pairs):
        cache.update(key, value, layer)
    if encoder_decoder:
        return EncoderDecoderCache(cache, DynamicCache())
    return cache
