"""Getting a quantized (k-bit) model ready for adapter training: ``prepare_model_for_kbit_training``.

The core knows no quantization library: a layer is quantized when the plugin that
describes it says so (``LayerDescription.quantized``, answered by backend plugins such as
``peft-core-bnb``). That is also how the weights that must *not* be cast are recognised —
a 4-bit weight may be stored in a bfloat16 container, and casting it would destroy it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import UnsupportedOperation
from .weights import describe_layer

_HALF = (torch.float16, torch.bfloat16)


def quantized_weights(model: nn.Module) -> set[int]:
    """``id`` of every weight tensor that a plugin describes as quantized."""
    ids: set[int] = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        desc = describe_layer(module)
        if desc is not None and desc.quantized:
            ids.add(id(weight))
    return ids


def is_loaded_in_kbit(model: nn.Module) -> bool:
    """Is any layer quantized (by a backend plugin), or does transformers say the model was loaded so?"""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return True
    return bool(quantized_weights(model))


def prepare_model_for_kbit_training(
    model: nn.Module,
    use_gradient_checkpointing: bool = True,
    gradient_checkpointing_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Prepare a quantized transformers model for training adapters on it, as Hugging Face PEFT does.

    * every base parameter is frozen (only adapters added afterwards will train);
    * float16/bfloat16 parameters that are not quantized weights (norms, embeddings, the
      head, biases) are cast to float32: low-precision norms and heads make small adapter
      updates vanish and training unstable;
    * when the model is quantized and ``use_gradient_checkpointing`` is set, gradient
      checkpointing is turned on, and, for the reentrant variant, the input embeddings'
      output is made to require grad — reentrant checkpointing only backpropagates into a
      block whose inputs require grad, and with a frozen embedding nothing would.

    ``gradient_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint``. Without
    ``use_reentrant`` in them, ``use_reentrant=True`` is used: what PEFT ends up with
    (it passes none and torch defaults to the reentrant variant), stated explicitly so
    torch does not warn. Returns ``model`` (changed in place).
    """
    kwargs = dict(gradient_checkpointing_kwargs or {})
    quantized = quantized_weights(model)
    loaded_in_kbit = bool(quantized) or is_loaded_in_kbit(model)
    for param in model.parameters():
        param.requires_grad_(False)
    for param in model.parameters():
        if id(param) in quantized or type(param) not in (torch.Tensor, nn.Parameter):
            continue
        if param.dtype in _HALF:
            param.data = param.data.to(torch.float32)
    if loaded_in_kbit and use_gradient_checkpointing:
        kwargs.setdefault("use_reentrant", True)
        if kwargs["use_reentrant"]:
            _enable_input_require_grads(model)
        _enable_gradient_checkpointing(model, kwargs)
    return model


def _enable_input_require_grads(model: nn.Module) -> None:
    enable = getattr(model, "enable_input_require_grads", None)
    if callable(enable):
        enable()
        return
    get_emb = getattr(model, "get_input_embeddings", None)
    if not callable(get_emb):
        raise UnsupportedOperation(
            f"{type(model).__name__} has no input embeddings to make require grad for reentrant gradient "
            "checkpointing; pass gradient_checkpointing_kwargs={'use_reentrant': False} or use_gradient_checkpointing=False."
        )

    def make_output_require_grad(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        output.requires_grad_(True)

    get_emb().register_forward_hook(make_output_require_grad)


def _enable_gradient_checkpointing(model: nn.Module, kwargs: dict[str, Any]) -> None:
    # transformers 5 renamed gradient_checkpointing_enable (kept as a deprecated alias)
    new = getattr(model, "activation_checkpointing_enable", None)
    if callable(new):
        new(activation_checkpointing_kwargs=kwargs)
        return
    old = getattr(model, "gradient_checkpointing_enable", None)
    if callable(old):
        old(gradient_checkpointing_kwargs=kwargs)
        return
    raise UnsupportedOperation(
        f"{type(model).__name__} does not support gradient checkpointing (no gradient_checkpointing_enable); "
        "call prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)."
    )
