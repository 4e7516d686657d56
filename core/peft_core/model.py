"""``PeftModel`` and the task wrappers, with Hugging Face PEFT's names and signatures.

A ``PeftModel`` owns an :class:`~peft_core.tuner.AdapterModel` (``self.base_model``)
which owns the user's model (``self.base_model.model``), so parameter names read
``base_model.model.<path>`` exactly as in PEFT. Attribute lookups the wrapper does not
answer go to the tuner and then to the model, as users expect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import PeftConfig, TaskType
from .errors import AdapterNameError, ConfigError, LoadError, SaveError, UnsupportedOperation
from .fileio import atomic_write_text
from .layer import AdapterLayer
from .names import validate_adapter_name
from .serialization import LoadResult, get_peft_model_state_dict, load_peft_weights, save_weights, set_peft_model_state_dict
from .tuner import AdapterModel, routing

#: heads that task wrappers train and save in full with the adapter (``modules_to_save``)
TASK_HEADS = {
    TaskType.SEQ_CLS: ("classifier", "score"),
    TaskType.TOKEN_CLS: ("classifier", "score"),
    TaskType.QUESTION_ANS: ("qa_outputs",),
}


def _tuner_class(config: PeftConfig) -> type[AdapterModel]:
    """The tuner a method asks for (``MethodSpec.tuner_class``), else the layer tuner."""
    from .plugins import registry

    return registry().for_config(config).tuner_class or AdapterModel


def _with_task_heads(config: PeftConfig) -> PeftConfig:
    heads = TASK_HEADS.get(config.task_type) if config.task_type else None
    if not heads or not hasattr(config, "modules_to_save"):
        return config
    current = list(config.modules_to_save or [])
    config.modules_to_save = current + [h for h in heads if h not in current]
    return config


class PeftModel(nn.Module):
    """A model with one or more adapters; the base for every task wrapper."""

    def __init__(
        self,
        model: nn.Module,
        peft_config: PeftConfig,
        adapter_name: str = "default",
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
    ) -> None:
        super().__init__()
        peft_config = _with_task_heads(peft_config)
        tuner_class = _tuner_class(peft_config)
        self.base_model = tuner_class(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        self.special_peft_forward_args = {"adapter_names"}

    # -- delegation -----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    @property
    def peft_config(self) -> dict[str, PeftConfig]:
        return self.base_model.peft_config

    @property
    def active_adapter(self) -> str | list[str]:
        return self.base_model.active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return self.base_model.active_adapters

    def get_base_model(self) -> nn.Module:
        """The user's model, with the adapter layers inside it."""
        return self.base_model.model

    # -- forward --------------------------------------------------------------------------

    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        with routing(self.base_model, adapter_names, _batch_size(args, kwargs)):
            outputs = self.base_model(*args, **kwargs)  # the tuner's forward (a prompt tuner transforms inputs)
        loss = getattr(outputs, "loss", None)
        if isinstance(loss, torch.Tensor):  # labels were given: methods may add regularisers
            outputs.loss = _with_extra_loss(self.base_model, outputs, loss)
        return outputs

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model alone inside the block; adapters come back after it."""
        self.base_model.disable_adapter_layers()
        try:
            yield
        finally:
            self.base_model.enable_adapter_layers()

    # -- adapters -------------------------------------------------------------------------

    def add_adapter(self, adapter_name: str, peft_config: PeftConfig, low_cpu_mem_usage: bool = False) -> None:
        """Add a new (inactive) adapter; ``set_adapter`` activates it."""
        self.base_model.inject_adapter(_with_task_heads(peft_config), adapter_name)

    def set_adapter(self, adapter_name: str | Sequence[str], inference_mode: bool = False) -> None:
        """Activate one adapter or several (their outputs add up); ``inference_mode`` keeps them frozen."""
        self.base_model.set_adapter(adapter_name, inference_mode=inference_mode)

    def delete_adapter(self, adapter_name: str) -> None:
        self.base_model.delete_adapter(adapter_name)

    def set_requires_grad(self, adapter_names: str | Sequence[str], requires_grad: bool = True) -> None:
        """Switch gradients of the named adapters' parameters on or off, leaving activity as it is."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for name in names:
            self.base_model._config(name)
        for _, module in self.base_model.adapter_modules():
            for name in names:
                params = (module.adapter_parameters(name) if hasattr(module, "adapter_parameters")
                          else module.modules_to_save[name].parameters() if name in module.modules_to_save else [])
                for param in params:
                    param.requires_grad_(requires_grad)

    def get_layer_status(self) -> list[Any]:
        """Per-layer adapter state (PEFT's ``TunerLayerStatus``); see :func:`peft_core.status.get_layer_status`."""
        from .status import get_layer_status

        return get_layer_status(self)

    def get_model_status(self) -> Any:
        """Whole-model adapter state (PEFT's ``TunerModelStatus``); see :func:`peft_core.status.get_model_status`."""
        from .status import get_model_status

        return get_model_status(self)

    # -- parameters -----------------------------------------------------------------------

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts, counting packed 4-bit storage as its real size."""
        trainable = total = 0
        for param in self.parameters():
            n = param.numel()
            if n == 0 and hasattr(param, "ds_numel"):
                n = param.ds_numel
            if param.__class__.__name__ == "Params4bit":
                n *= 2 * param.element_size()  # two 4-bit values per byte
            total += n
            if param.requires_grad:
                trainable += n
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / max(total, 1):.4f}")

    # -- saving and loading ---------------------------------------------------------------

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        selected_adapters: Sequence[str] | None = None,
        save_embedding_layers: str | bool = "auto",
        is_main_process: bool = True,
        path_initial_model_for_weight_conversion: str | None = None,
        durable: bool = False,
        **kwargs: Any,
    ) -> None:
        """Save adapters in the PEFT layout: ``default`` in the directory, others in ``<dir>/<name>/``.

        Every file is replaced atomically. ``durable=True`` also waits until weights and
        config are on the disk (fsync), so they survive a power cut; see :mod:`peft_core.fileio`.
        """
        root = Path(save_directory)
        if root.is_file():
            raise SaveError(f"{str(root)!r} is a file; save_pretrained needs a directory.")
        names = list(selected_adapters) if selected_adapters is not None else list(self.peft_config)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise AdapterNameError(f"cannot save unknown adapters {unknown}; this model has {sorted(self.peft_config)}.")
        for name in names:  # again here: a name must never lead outside save_directory
            validate_adapter_name(name)
        for name in names:
            state = get_peft_model_state_dict(self, state_dict=kwargs.get("state_dict"), adapter_name=name)
            if not is_main_process:
                continue
            out = root if name == "default" else root / name
            config = self._saved_config(name)
            if path_initial_model_for_weight_conversion is not None:
                state, config = self._convert_for_initial_model(name, config, state, path_initial_model_for_weight_conversion)
            save_weights(state, out, safe_serialization=safe_serialization, durable=durable)
            config.save_pretrained(out, durable=durable)
            _write_model_card(out, config)

    def _convert_for_initial_model(
        self, adapter_name: str, config: PeftConfig, state: dict[str, torch.Tensor], initial_dir: str | os.PathLike
    ) -> tuple[dict[str, torch.Tensor], PeftConfig]:
        """Ask the adapter's plugin for an adapter that applies to the original base (PiSSA/OLoRA conversion)."""
        from .plugins import hook, registry

        spec = registry().for_config(config)
        converted = hook().peft_core_convert_for_initial_model(
            spec=spec, config=config, adapter_name=adapter_name, model=self, state_dict=state,
            initial_dir=str(initial_dir))
        if converted is None:
            raise UnsupportedOperation(
                f"path_initial_model_for_weight_conversion: no installed plugin converts {spec.name} adapters with "
                f"this config (adapter {adapter_name!r}); it is meant for initialisations that change the base "
                "weights (PiSSA, OLoRA: pip install peft-core-lora-inits). Save without it instead.")
        return converted

    def _saved_config(self, adapter_name: str) -> PeftConfig:
        config = dataclasses.replace(self.peft_config[adapter_name], inference_mode=True)
        base = self.get_base_model()
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = base.__dict__.get("name_or_path") or None  # "" (from-config models) is no id
        if config.task_type is None:
            config.auto_mapping = {"base_model_class": type(base).__name__, "parent_library": type(base).__module__}
        return config

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike,
        adapter_name: str = "default",
        is_trainable: bool = False,
        config: PeftConfig | None = None,
        autocast_adapter_dtype: bool = True,
        ephemeral_gpu_offload: bool = False,
        low_cpu_mem_usage: bool = False,
        strict: bool = False,
        **kwargs: Any,
    ) -> PeftModel:
        """Wrap ``model`` and load the adapter saved in the local directory ``model_id``.

        If loading fails, the adapter layers are removed again and ``model`` is as it was.
        ``strict=True`` makes missing or unexpected keys an error instead of a warning.
        """
        if isinstance(model, PeftModel):
            raise ConfigError("model is already a PeftModel; use model.load_adapter(path, adapter_name) instead.")
        subfolder = kwargs.get("subfolder")
        path = Path(model_id) / subfolder if subfolder else Path(model_id)
        if config is None:
            config = PeftConfig.from_pretrained(path)
        _refuse_trainable_prompt(config, is_trainable)
        config.inference_mode = not is_trainable
        klass = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel) if cls is PeftModel else cls
        flags = {p: p.requires_grad for p in model.parameters()}
        peft_model = klass(model, config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        try:
            peft_model._load_weights(path, adapter_name, kwargs.get("torch_device"), strict=strict)
        except BaseException:
            peft_model.base_model.delete_adapter(adapter_name)  # like unload(), also for methods that refuse unload
            for param, flag in flags.items():
                param.requires_grad_(flag)
            raise
        if not is_trainable:
            peft_model.eval()
        return peft_model

    def load_adapter(
        self,
        model_id: str | os.PathLike,
        adapter_name: str,
        is_trainable: bool = False,
        torch_device: str | None = None,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        strict: bool = False,
        **kwargs: Any,
    ) -> LoadResult:
        """Load another saved adapter next to the existing ones (not activated); all-or-nothing.

        ``strict=True`` makes missing or unexpected keys an error instead of a warning.
        """
        subfolder = kwargs.get("subfolder")
        path = Path(model_id) / subfolder if subfolder else Path(model_id)
        config = PeftConfig.from_pretrained(path)
        _refuse_trainable_prompt(config, is_trainable)
        config.inference_mode = not is_trainable
        # adding freezes the base (and may reset other adapters' flags); a failure gives them back
        alone = getattr(self.base_model, "leaves_other_adapters_alone", None)
        flags = _grad_flags(self, skip_adapters=bool(alone and alone(config)))
        self.add_adapter(adapter_name, config)
        try:
            result = self._load_weights(path, adapter_name, torch_device, strict=strict)
        except BaseException:
            self.base_model.delete_adapter(adapter_name)
            for param, flag in flags.items():
                param.requires_grad_(flag)
            raise
        if not is_trainable:
            self.eval()
        return result

    def _load_weights(self, path: Path, adapter_name: str, device: str | None, strict: bool = False) -> LoadResult:
        state = load_peft_weights(path, device=device)
        try:
            result = set_peft_model_state_dict(self, state, adapter_name=adapter_name, strict=strict)
        except LoadError as exc:  # say which file did not fit
            raise LoadError(f"{path}: {exc}") from None
        if result.unexpected_keys:
            warnings.warn(f"unexpected keys in {path} ignored: {result.unexpected_keys[:10]}", UserWarning, stacklevel=3)
        if result.missing_keys:
            warnings.warn(
                f"adapter {adapter_name!r}: keys missing from {path} keep their initial values: {result.missing_keys[:10]}",
                UserWarning,
                stacklevel=3,
            )
        return result


def _grad_flags(model: nn.Module, skip_adapters: bool = False) -> dict[nn.Parameter, bool]:
    """``{p: p.requires_grad for p in model.parameters()}`` by a plain walk over ``_modules``.

    ``parameters()`` goes through generic named-member generators; with many adapters
    loaded (three modules per adapter and layer) that walk was a large part of each
    ``load_adapter``. ``skip_adapters`` leaves out the adapters' own containers in adapter
    layers, for additions that do not touch them (``leaves_other_adapters_alone``).
    """
    flags: dict[nn.Parameter, bool] = {}
    seen: set[int] = set()
    stack = [model]
    while stack:
        module = stack.pop()
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        if module._parameters:
            for param in module._parameters.values():
                if param is not None:
                    flags[param] = param.requires_grad
        if module._modules:
            if skip_adapters and isinstance(module, AdapterLayer):
                own = module.adapter_layer_names
                stack.extend(child for name, child in module._modules.items() if name not in own)
            else:
                stack.extend(module._modules.values())
    return flags


def _refuse_trainable_prompt(config: PeftConfig, is_trainable: bool) -> None:
    """Saved prompts are materialized (P-tuning's MLP output, not the MLP), so, as in PEFT, they load frozen."""
    if config.is_prompt_learning and is_trainable:
        raise UnsupportedOperation(
            f"{config.peft_type} adapters load for inference only (is_trainable=False), as in Hugging Face PEFT: "
            "the file holds the materialized prompt, not the network that produced it. To train further, create "
            "a new adapter with get_peft_model/add_adapter."
        )


def _with_extra_loss(tuner: AdapterModel, outputs: Any, loss: torch.Tensor) -> torch.Tensor:
    """``loss`` plus every ``peft_core_extra_loss`` term of the trainable adapters."""
    from .plugins import hook

    for name, config in tuner.peft_config.items():
        if config.inference_mode:
            continue
        terms = hook().peft_core_extra_loss(spec=tuner.spec_for(name), config=config, adapter_name=name,
                                            tuner=tuner, outputs=outputs)
        for term in terms:
            if term is not None:
                loss = loss + term
    return loss


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def _write_model_card(directory: Path, config: PeftConfig) -> None:
    card = directory / "README.md"
    if card.exists():
        return
    base = config.base_model_name_or_path
    text = (
        "---\nlibrary_name: peft\n"
        + (f"base_model: {base}\n" if base else "")
        + f"tags:\n- peft-core\n- {str(config.peft_type).lower()}\n---\n\n"
        + f"# {config.peft_type} adapter\n\nSaved with peft-core in the Hugging Face PEFT format; "
        "load it with `PeftModel.from_pretrained(base_model, path)` from peft-core or PEFT.\n"
    )
    atomic_write_text(card, text)  # documentation, never synced: loading does not need it


class _GenerateMixin:
    def generate(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """``generate`` of the base model, with adapters (and mixed-batch routing) applied."""
        with routing(self.base_model, adapter_names, _batch_size(args, kwargs)):
            return self.base_model.generate(*args, **kwargs)  # a prompt tuner injects on the first step

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> Any:
        return self.get_base_model().prepare_inputs_for_generation(*args, **kwargs)


class PeftModelForCausalLM(_GenerateMixin, PeftModel):
    """Causal language models (``AutoModelForCausalLM``), with ``generate``."""


class PeftModelForSeq2SeqLM(_GenerateMixin, PeftModel):
    """Encoder-decoder models (``AutoModelForSeq2SeqLM``), with ``generate``."""


class PeftModelForSequenceClassification(PeftModel):
    """Sequence classifiers; the new head (``classifier``/``score``) is trained and saved in full."""


class PeftModelForTokenClassification(PeftModel):
    """Token classifiers; the head (``classifier``/``score``) is trained and saved in full."""


class PeftModelForQuestionAnswering(PeftModel):
    """Extractive QA models; the ``qa_outputs`` head is trained and saved in full."""


class PeftModelForFeatureExtraction(PeftModel):
    """Encoders used for embeddings (``AutoModel``)."""


MODEL_TYPE_TO_PEFT_MODEL_MAPPING: dict[Any, type[PeftModel]] = {
    TaskType.CAUSAL_LM: PeftModelForCausalLM,
    TaskType.SEQ_2_SEQ_LM: PeftModelForSeq2SeqLM,
    TaskType.SEQ_CLS: PeftModelForSequenceClassification,
    TaskType.TOKEN_CLS: PeftModelForTokenClassification,
    TaskType.QUESTION_ANS: PeftModelForQuestionAnswering,
    TaskType.FEATURE_EXTRACTION: PeftModelForFeatureExtraction,
}


def get_peft_model(
    model: nn.Module,
    peft_config: PeftConfig,
    adapter_name: str = "default",
    mixed: bool = False,
    autocast_adapter_dtype: bool = True,
    revision: str | None = None,
    low_cpu_mem_usage: bool = False,
) -> PeftModel:
    """Wrap ``model`` with a new adapter described by ``peft_config``; the task wrapper follows ``task_type``."""
    if isinstance(model, PeftModel):
        raise ConfigError("model is already a PeftModel; call model.add_adapter(name, config) to add another adapter.")
    if not isinstance(peft_config, PeftConfig):
        raise ConfigError(f"peft_config must be a PeftConfig (e.g. LoraConfig), got {type(peft_config).__name__}.")
    if mixed:  # adapters of several methods on one model; see peft_core.mixed
        from .mixed import PeftMixedModel

        return PeftMixedModel(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
    name_or_path = model.__dict__.get("name_or_path") or None  # like PEFT: "" from from-config models is no Hub id
    if name_or_path is not None and peft_config.base_model_name_or_path is None:
        peft_config.base_model_name_or_path = name_or_path
    if revision is not None:
        peft_config.revision = revision
    klass = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(peft_config.task_type, PeftModel)
    return klass(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)


def inject_adapter_in_model(
    peft_config: PeftConfig,
    model: nn.Module,
    adapter_name: str = "default",
    low_cpu_mem_usage: bool = False,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Put adapter layers into ``model`` in place and return it, without a ``PeftModel`` wrapper."""
    tuner = AdapterModel(model, peft_config, adapter_name)
    model.__dict__["_peft_core_tuner"] = tuner  # not a submodule: no reference cycle in the module tree
    if state_dict is not None:
        from .serialization import set_peft_model_state_dict

        set_peft_model_state_dict(tuner, state_dict, adapter_name)
    return model
