"""peft-core: parameter-efficient fine-tuning with every method a plugin.

The public API mirrors Hugging Face PEFT (``get_peft_model``, ``PeftModel``,
``LoraConfig``…). Names that belong to a method — ``LoraConfig``, ``IA3Config`` — are
provided by that method's plugin and resolved lazily here, so ``from peft_core import
LoraConfig`` works when ``peft-core-lora`` is installed and says what to install when not.
"""

from __future__ import annotations

from typing import Any

from .config import PeftConfig, PromptLearningConfig, TaskType
from .errors import (
    AdapterNameError,
    ConfigError,
    LoadError,
    MergeError,
    PeftCoreError,
    PluginError,
    PluginNotInstalledError,
    TargetModulesError,
    UnknownMethodError,
    UnsupportedOperation,
)
from .hookspecs import hookimpl
from .kbit import prepare_model_for_kbit_training
from .layer import AdapterLayer
from .model import (
    MODEL_TYPE_TO_PEFT_MODEL_MAPPING,
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
    get_peft_model,
    inject_adapter_in_model,
)
from .registry import Capability, MethodSpec
from .serialization import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict
from .tuner import AdapterModel
from .helpers import check_if_peft_model, rescale_adapter_scale, update_forward_signature, update_generate_signature, update_signature
from .hotswap import hotswap_adapter, prepare_model_for_compiled_hotswap
from .merging import add_weighted_adapter
from .mixed import PeftMixedModel
from .status import TunerLayerStatus, TunerModelStatus, get_layer_status, get_model_status

__version__ = "0.1.0"

__all__ = [
    "AdapterLayer",
    "AdapterModel",
    "TunerLayerStatus",
    "TunerModelStatus",
    "add_weighted_adapter",
    "check_if_peft_model",
    "get_layer_status",
    "get_model_status",
    "hotswap_adapter",
    "prepare_model_for_compiled_hotswap",
    "rescale_adapter_scale",
    "update_forward_signature",
    "update_generate_signature",
    "update_signature",
    "AdapterNameError",
    "Capability",
    "ConfigError",
    "LoadError",
    "MODEL_TYPE_TO_PEFT_MODEL_MAPPING",
    "MergeError",
    "MethodSpec",
    "PeftConfig",
    "PeftCoreError",
    "PeftMixedModel",
    "PeftModel",
    "PeftModelForCausalLM",
    "PeftModelForFeatureExtraction",
    "PeftModelForQuestionAnswering",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification",
    "PromptLearningConfig",
    "PluginError",
    "PluginNotInstalledError",
    "TargetModulesError",
    "TaskType",
    "UnknownMethodError",
    "UnsupportedOperation",
    "get_peft_model",
    "get_peft_model_state_dict",
    "hookimpl",
    "inject_adapter_in_model",
    "load_peft_weights",
    "prepare_model_for_kbit_training",
    "set_peft_model_state_dict",
]


def __getattr__(name: str) -> Any:
    """Resolve names exported by installed plugins (``LoraConfig``, …) on first access."""
    if name.startswith("__"):
        raise AttributeError(name)
    from .known import distribution_for_name
    from .plugins import registry

    found = registry().find_export(name)
    if found is not None:
        return found
    dist = distribution_for_name(name)
    if dist is not None:
        raise PluginNotInstalledError(
            f"{name} is provided by the plugin distribution {dist!r}, which is not installed "
            f"(or failed to load; see `peft-core methods`). Install it with `pip install {dist}`."
        )
    raise AttributeError(f"module 'peft_core' has no attribute {name!r}")
