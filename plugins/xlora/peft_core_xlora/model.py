"""``XLoraModel``: the tuner of an X-LoRA adapter (``PeftModel.base_model``).

It loads the experts (saved LoRA adapters) through the LoRA plugin like any LoRA adapter,
keeps them all active, and installs an :class:`~.classifier.ExpertWeights` provider on every
LoRA layer (LoRA's ``TokenWeights`` extension point) — no LoRA forward is replaced. A forward
pre-hook on the base model runs the two passes X-LoRA needs: first, without gradients, every
expert weighted ``scaling_pass_value`` to get the last hidden state; then the classifier turns
it into per-token, per-layer expert weights, and the model's own forward runs with them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError, LoadError, UnsupportedOperation
from peft_core.registry import Capability
from peft_core.serialization import load_peft_weights, set_peft_model_state_dict
from peft_core.targeting import walk_modules
from peft_core.tuner import AdapterModel
from peft_core_lora.config import LoraConfig
from peft_core_lora.layer import LoraConv, LoraLayer

from .classifier import ExpertWeights, MixingState, XLoraClassifier
from .config import XLoraConfig

#: where PEFT keeps (and saves) the classifier: ``base_model.internal_xlora_classifier.*``
CLASSIFIER = "internal_xlora_classifier"


def _expert_config(name: str, path: str, trainable: bool) -> LoraConfig:
    where = Path(path)
    if not (where / "adapter_config.json").is_file():
        raise ConfigError(f"X-LoRA expert {name!r}: no saved LoRA adapter at {path!r}. Point adapters[{name!r}] at a "
                          "directory written by save_pretrained (a model saved with X-LoRA keeps a copy of each "
                          "expert in <dir>/<expert name>).")
    config = PeftConfig.from_pretrained(where)
    if not isinstance(config, LoraConfig):
        raise ConfigError(f"X-LoRA expert {name!r} at {path!r} is a {config.peft_type} adapter; X-LoRA mixes LoRA adapters.")
    if getattr(config, "use_dora", False):
        raise ConfigError(f"X-LoRA expert {name!r} uses DoRA; X-LoRA weighs plain LoRA experts only (as in PEFT).")
    if config.modules_to_save:
        raise ConfigError(f"X-LoRA expert {name!r} has modules_to_save; whole-module copies cannot be mixed per token.")
    config.inference_mode = not trainable
    return config


def _freeze_experts(tuner: AdapterModel, experts: dict[str, LoraConfig]) -> None:
    for _, layer in tuner.adapter_layers():
        for name, config in experts.items():
            for param in layer.adapter_parameters(name):
                param.requires_grad_(not config.inference_mode)


class XLoraModel(AdapterModel):
    """LoRA experts in ``self.model``, mixed per token by ``internal_xlora_classifier``."""

    def __init__(self, model: nn.Module, peft_config: XLoraConfig | dict[str, XLoraConfig], adapter_name: str = "default",
                 autocast_adapter_dtype: bool = True, low_cpu_mem_usage: bool = False) -> None:
        config = peft_config[adapter_name] if isinstance(peft_config, dict) else peft_config
        experts = self._check(model, config, adapter_name)
        super().__init__(model, experts, adapter_name=next(iter(experts)), autocast_adapter_dtype=autocast_adapter_dtype)
        lora_layers = [m for _, m in walk_modules(self.model) if isinstance(m, LoraLayer)]
        try:
            if any(isinstance(m, LoraConv) for m in lora_layers):
                raise ConfigError("X-LoRA weighs the tokens of sequence models; an expert targets a convolution, "
                                  "which has no token axis. Use experts on linear/embedding layers.")
            for name, path in config.adapters.items():
                self._load_expert(name, path)
        except BaseException:
            super().unload()  # the model is left as it was given
            raise
        # the experts are the X-LoRA adapter's parts, not adapters of their own: peft_config holds only it
        self._experts = {name: self.peft_config.pop(name) for name in experts}
        self.peft_config[adapter_name] = config
        self._xlora_name = adapter_name
        self._disabled = False
        self.set_adapter(list(experts))
        reference = next(model.parameters())
        dtype = reference.dtype
        if autocast_adapter_dtype and dtype in (torch.float16, torch.bfloat16):
            dtype = torch.float32  # trained in fp32 over a half-precision base, like every adapter here
        self.internal_xlora_classifier = XLoraClassifier(config, len(experts), len(lora_layers)).to(
            device=reference.device, dtype=dtype)
        self.internal_xlora_classifier.requires_grad_(not config.inference_mode)
        self.internal_xlora_classifier.train(model.training)  # dropout follows the model's mode, as PEFT's eval()
        self._mixing = MixingState(config)
        index = {name: k for k, name in enumerate(config.adapters)}
        for i, layer in enumerate(lora_layers):
            layer.set_token_weights(ExpertWeights(self._mixing, i, index))
        self._latest: torch.Tensor | None = None
        self._log: list[torch.Tensor] = []
        self._logging = False
        self._hook = model.register_forward_pre_hook(self._scaling_pass, with_kwargs=True)

    @staticmethod
    def _check(model: nn.Module, config: XLoraConfig, adapter_name: str) -> dict[str, LoraConfig]:
        if not isinstance(config, XLoraConfig):
            raise ConfigError(f"XLoraModel needs an XLoraConfig, got {type(config).__name__}.")
        if not config.adapters:
            raise ConfigError("XLoraConfig.adapters is empty: give the LoRA experts to mix, {'name': 'path/to/adapter'}.")
        if adapter_name in config.adapters:
            raise ConfigError(f"the X-LoRA adapter is named {adapter_name!r}, like one of its experts; rename the expert.")
        model_hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        if config.hidden_size is None:
            if model_hidden is None:
                raise ConfigError("XLoraConfig.hidden_size is not set and the model has no config.hidden_size; pass it.")
            config.hidden_size = model_hidden
        elif model_hidden is not None and config.hidden_size != model_hidden:
            raise ConfigError(f"XLoraConfig.hidden_size={config.hidden_size} but the model's hidden size is {model_hidden}.")
        trainable = config.use_trainable_adapters and not config.inference_mode
        experts = {name: _expert_config(name, path, trainable) for name, path in config.adapters.items()}
        model_config = getattr(model, "config", None)  # changed only after the experts were found usable
        if getattr(model_config, "use_cache", False):
            warnings.warn("X-LoRA recomputes its expert weights over the whole sequence at every step, so it cannot use "
                          "a KV cache: setting model.config.use_cache = False.", UserWarning, stacklevel=4)
            model_config.use_cache = False
        generation = getattr(model, "generation_config", None)
        if getattr(generation, "use_cache", False):
            generation.use_cache = False
        return experts

    def _load_expert(self, name: str, path: str) -> None:
        result = set_peft_model_state_dict(self, load_peft_weights(path), adapter_name=name)
        if result.missing_keys:
            raise LoadError(f"X-LoRA expert {name!r} at {path!r} lacks tensors its own config needs: "
                            f"{result.missing_keys[:3]}; the directory does not hold that adapter.")
        if result.unexpected_keys:  # PEFT saves targeted embeddings' base weights too
            warnings.warn(f"X-LoRA expert {name!r}: keys in {path!r} that are not LoRA tensors were ignored: "
                          f"{result.unexpected_keys[:3]}", UserWarning, stacklevel=4)

    # -- the two passes -------------------------------------------------------------------

    def _scaling_pass(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """Before the model's forward: compute the expert weights it will run with."""
        if self._disabled or self._mixing.in_scaling_pass:
            return None
        if kwargs.get("use_cache"):
            raise UnsupportedOperation("X-LoRA cannot use a KV cache (its expert weights depend on the whole "
                                       "sequence); call with use_cache=False.")
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if tokens is None:
            raise ConfigError("X-LoRA needs input_ids or inputs_embeds to size its expert weights.")
        classifier = self.internal_xlora_classifier
        shape = (tokens.shape[0], tokens.shape[1], classifier.n_layers, classifier.n_experts)
        dtype = next(classifier.parameters()).dtype
        self._mixing.set(torch.full(shape, float(self._config(self._xlora_name).scaling_pass_value),
                                    dtype=dtype, device=tokens.device))
        self._mixing.in_scaling_pass = True
        try:
            with torch.no_grad():
                out = module(*args, **{**kwargs, "output_hidden_states": True, "return_dict": True})
        finally:
            self._mixing.in_scaling_pass = False
        weights = classifier(out.hidden_states[-1].to(dtype))
        self._latest = weights
        if self._logging:
            self._log.append(weights)
        self._mixing.set(weights)
        return None

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["use_cache"] = False
        return self.model.generate(*args, **kwargs)

    # -- what an X-LoRA model is, for the core --------------------------------------------

    def tuner_entries(self, adapter_name: str) -> dict[str, tuple[str, torch.Tensor]]:
        if adapter_name != self.__dict__.get("_xlora_name"):
            return {}
        return {f"base_model.{CLASSIFIER}.{k}": (f"base_model.{CLASSIFIER}.{k}", t)
                for k, t in self.internal_xlora_classifier.state_dict(keep_vars=True).items()}

    def _config(self, adapter_name: str) -> PeftConfig:
        experts = self.__dict__.get("_experts")
        if experts is not None and adapter_name in experts:
            return experts[adapter_name]
        return super()._config(adapter_name)

    @property
    def active_adapters(self) -> list[str]:
        return [self._xlora_name] if "_xlora_name" in self.__dict__ else super().active_adapters

    @property
    def active_adapter(self) -> str | list[str]:
        return self._xlora_name if "_xlora_name" in self.__dict__ else super().active_adapter

    @property
    def experts(self) -> list[str]:
        """The experts' names, in the order of the classifier's outputs."""
        return list(self._config(self._xlora_name).adapters)

    def inject_adapter(self, config: PeftConfig, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        if "_xlora_name" in self.__dict__:  # built: the classifier's outputs are fixed to these experts
            self.spec_for(self._xlora_name).require(Capability.MULTI_ADAPTER, "adding an adapter to an X-LoRA model")
        super().inject_adapter(config, adapter_name, autocast_adapter_dtype)

    def set_adapter(self, adapter_name: str | Sequence[str], inference_mode: bool = False) -> None:
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        if "_xlora_name" in self.__dict__:
            if names not in ([self._xlora_name], self.experts):
                self.spec_for(self._xlora_name).require(Capability.MULTI_ADAPTER, f"activating {names} alone")
            names = self.experts
        super().set_adapter(names, inference_mode=inference_mode)
        if "_experts" in self.__dict__:  # the core sets trainability from peft_config, which no longer lists them
            _freeze_experts(self, self._experts)

    def _set_enabled(self, enabled: bool) -> None:
        super()._set_enabled(enabled)
        self._disabled = not enabled

    # the experts are LoRA adapters, which merge and combine; the mixture as a whole does not
    def merge_adapter(self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False) -> None:
        self.spec_for(self._xlora_name).require(Capability.MERGE, "merging")
        super().merge_adapter(adapter_names, safe_merge)

    def merge_and_unload(self, *args: Any, **kwargs: Any) -> nn.Module:
        self.spec_for(self._xlora_name).require(Capability.MERGE, "merge_and_unload")
        return super().merge_and_unload(*args, **kwargs)

    def add_weighted_adapter(self, *args: Any, **kwargs: Any) -> None:
        self.spec_for(self._xlora_name).require(Capability.WEIGHTED_COMBINE, "add_weighted_adapter")
        super().add_weighted_adapter(*args, **kwargs)

    def unload(self) -> nn.Module:
        """Remove the experts, the classifier and the hook; the plain base model comes back."""
        self._hook.remove()
        for _, module in walk_modules(self.model):
            if isinstance(module, LoraLayer):
                module.set_token_weights(None)
        self.peft_config.pop(self._xlora_name, None)
        del self.internal_xlora_classifier
        self._mixing.set(None)
        self._latest = None
        self._log.clear()
        del self.__dict__["_xlora_name"]
        return super().unload()

    def delete_adapter(self, adapter_name: str) -> None:
        """Deleting the X-LoRA adapter removes everything (experts included); an expert alone cannot go."""
        if adapter_name != self._xlora_name:
            self.spec_for(self._xlora_name).require(Capability.MULTI_ADAPTER, f"deleting the expert {adapter_name!r}")
        self.unload()
        self.peft_config.clear()
        self._experts.clear()
        self._active = []

    # -- PEFT's X-LoRA helpers ------------------------------------------------------------

    def set_topk_lora(self, value: int | None) -> None:
        """Mix only each token's ``value`` strongest experts (``None``: all); kept in the config."""
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ConfigError(f"top_k_lora must be None or at least 1, got {value!r}.")
        self._config(self._xlora_name).top_k_lora = value

    def set_global_scaling_weight(self, weight: float) -> None:
        """Multiply every expert's output by ``weight``; kept in the config."""
        self._config(self._xlora_name).global_scaling_weight = weight

    def get_global_scaling_weight(self) -> float:
        return self._config(self._xlora_name).global_scaling_weight

    def set_scaling_pass_value(self, value: float | None) -> None:
        """Every expert's weight in the scaling pass; ``None`` means ``1 / n_experts``. Kept in the config."""
        self._config(self._xlora_name).scaling_pass_value = 1 / len(self.experts) if value is None else value

    def get_latest_scalings(self) -> torch.Tensor | None:
        """The classifier's last output ``(batch, seq, n_layers, n_experts)``, or ``None`` before any forward."""
        return self._latest

    def enable_scalings_logging(self) -> None:
        """Keep every forward's classifier output (see :meth:`get_scalings_log`)."""
        self._logging = True

    def disable_scalings_logging(self) -> None:
        """Stop logging; the log so far is kept (``clear_scalings_log`` drops it)."""
        self._logging = False

    def get_scalings_log(self) -> list[torch.Tensor]:
        """A copy of the list of logged classifier outputs (the tensors are shared)."""
        return list(self._log)

    def clear_scalings_log(self) -> None:
        self._log.clear()

    def get_bucketed_scalings_log(self) -> dict[int, tuple[list[int], list[torch.Tensor]]]:
        """The log grouped by sequence length: ``{seq_len: ([positions in the log], [tensors])}``."""
        buckets: dict[int, tuple[list[int], list[torch.Tensor]]] = {}
        for i, weights in enumerate(self.get_scalings_log()):
            positions, tensors = buckets.setdefault(weights.shape[1], ([], []))
            positions.append(i)
            tensors.append(weights)
        return buckets
