"""``XLoraConfig``: the field names, defaults and JSON of Hugging Face PEFT's X-LoRA config.

X-LoRA has no target modules of its own: its experts are LoRA adapters saved earlier
(``adapters``: name -> directory), and what it adds is a classifier that reads the hidden
states and weighs every expert per token (and per LoRA layer with ``layerwise_scalings``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError


@dataclass
class XLoraConfig(PeftConfig):
    """A classifier mixing the LoRA experts in ``adapters`` per token (arXiv 2402.07148).

    ``hidden_size`` is the base model's hidden size (filled from ``model.config`` when left
    ``None``). The classifier has ``xlora_depth`` linear layers (``xlora_size`` wide, ReLU and
    ``xlora_dropout_p`` dropout between them) and ends in one logit per expert (per expert and
    LoRA layer with ``layerwise_scalings``); ``enable_softmax`` turns them into weights with
    ``softmax_temperature``. ``top_k_lora`` keeps each token's k largest weights,
    ``enable_softmax_topk`` renormalises those with a softmax. ``scaling_pass_value`` is every
    expert's weight in the first pass that produces the classifier's input, and
    ``global_scaling_weight`` multiplies every expert's output in both passes. The experts
    stay frozen unless ``use_trainable_adapters``.
    """

    peft_type: Optional[str] = "XLORA"
    hidden_size: Optional[int] = None
    adapters: Optional[dict[str, str]] = None
    enable_softmax: bool = True
    enable_softmax_topk: bool = False
    layerwise_scalings: bool = False
    xlora_depth: int = 1
    xlora_size: int = 2048
    xlora_dropout_p: float = 0.2
    use_trainable_adapters: bool = False
    softmax_temperature: float = 1.0
    top_k_lora: Optional[int] = None
    scaling_pass_value: float = 0.0
    global_scaling_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "XLORA"
        if self.adapters is None:
            self.adapters = {}
        if not isinstance(self.adapters, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.adapters.items()):
            raise ConfigError("adapters must map expert names to directories of saved LoRA adapters "
                              f"({{'name': 'path/to/adapter'}}), got {self.adapters!r:.100}.")
        if self.hidden_size is not None and (isinstance(self.hidden_size, bool) or self.hidden_size < 1):
            raise ConfigError(f"hidden_size must be the base model's hidden size (a positive int), got {self.hidden_size!r}.")
        if isinstance(self.xlora_depth, bool) or self.xlora_depth < 1:
            raise ConfigError(f"xlora_depth must be at least 1 (the classifier's number of linear layers), "
                              f"got {self.xlora_depth!r}.")
        if self.xlora_depth > 1 and (isinstance(self.xlora_size, bool) or self.xlora_size < 1):
            raise ConfigError(f"xlora_size must be a positive width for the classifier's hidden layers, got {self.xlora_size!r}.")
        if not 0.0 <= self.xlora_dropout_p < 1.0:
            raise ConfigError(f"xlora_dropout_p must be in [0, 1), got {self.xlora_dropout_p!r}.")
        if not self.softmax_temperature > 0:
            raise ConfigError(f"softmax_temperature must be positive (lower is sharper), got {self.softmax_temperature!r}.")
        if self.top_k_lora is not None and (isinstance(self.top_k_lora, bool) or self.top_k_lora < 1):
            raise ConfigError(f"top_k_lora must be None (dense mixing) or at least 1, got {self.top_k_lora!r}.")
        if self.enable_softmax_topk and self.top_k_lora is None:
            warnings.warn("enable_softmax_topk has no effect without top_k_lora.", UserWarning, stacklevel=3)
        if self.enable_softmax_topk and self.enable_softmax:
            warnings.warn("enable_softmax and enable_softmax_topk are both on: the top-k weights are softmaxed twice.",
                          UserWarning, stacklevel=3)
