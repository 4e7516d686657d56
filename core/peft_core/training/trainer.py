"""Training peft-core models with ``transformers.Trainer``: adapter-only checkpoints and resuming.

Why a Trainer subclass (a mixin, really) and not a callback. ``transformers.Trainer``
recognises PEFT models by ``isinstance(model, peft.PeftModel)`` — the Hugging Face
package — in about ten places; a peft-core ``PeftModel`` is not one, so a plain Trainer:

* drops every dataset column (it keeps only names in ``model.forward``'s signature, and
  ours is ``forward(*args, **kwargs)``) unless ``remove_unused_columns=False``;
* finds no label names, so ``evaluate`` reports no ``eval_loss``;
* writes the *whole* model (``model.safetensors``, frozen base included) at every
  checkpoint — and fails on models with tied weights, which safetensors refuses —
  and on resume cannot find the adapter it should load.

A ``TrainerCallback`` runs only *after* the checkpoint is written and never takes part in
loading, so it can fix none of that. :class:`AdapterTrainerMixin` overrides the four
places instead: signature columns and label names come from the base model, ``_save``
calls our ``save_pretrained`` (adapter files only, written by the main process only), and
``_load_from_checkpoint``/``_load_best_model`` copy the saved tensors back into the live
adapters (keeping them trainable; the Trainer itself restores optimizer, scheduler and RNG
state). Models that are not peft-core models go to the Trainer's own code untouched.

Use :class:`AdapterTrainer` in place of ``Trainer``, or mix the mixin into another Trainer
subclass (``class MySFT(AdapterTrainerMixin, SFTTrainer)``). Gradient checkpointing needs
nothing extra: ``activation_checkpointing=True`` reaches the base model through the
wrapper, and for reentrant checkpointing the mixin makes the input embeddings' output
require grad (frozen embeddings would otherwise cut the graph before the adapters).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from torch import nn
from transformers import Trainer
from transformers.utils.generic import can_return_loss, find_labels

from ..errors import LoadError
from ..serialization import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME, load_peft_weights, set_peft_model_state_dict

TRAINING_ARGS_NAME = "training_args.bin"


def peft_core_model(model: nn.Module | None) -> Any:
    """The peft-core ``PeftModel`` inside ``model`` (DDP/compile wrappers peeled), or ``None``."""
    from ..model import PeftModel

    for _ in range(4):
        if isinstance(model, PeftModel):
            return model
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if model is None:
            return None
    return None


def _has_weights(directory: Path) -> bool:
    return (directory / SAFETENSORS_WEIGHTS_NAME).is_file() or (directory / WEIGHTS_NAME).is_file()


def load_adapter_checkpoint(peft_model: Any, checkpoint: str | os.PathLike) -> list[str]:
    """Copy every adapter saved in ``checkpoint`` into the model's adapter of the same name.

    ``default`` lives in the directory itself, any other adapter in ``<checkpoint>/<name>/``
    (the PEFT layout). The tensors are copied into the existing parameters, so trainability
    and the optimizer's references to them are kept. Returns the adapters loaded.
    """
    root = Path(checkpoint)
    loaded = []
    for name in peft_model.peft_config:
        directory = root if name == "default" else root / name
        if not _has_weights(directory):
            continue
        result = set_peft_model_state_dict(peft_model, load_peft_weights(directory), adapter_name=name)
        if result.missing_keys:
            raise LoadError(f"checkpoint {directory} lacks tensors of adapter {name!r} ({result.missing_keys[:3]}); "
                            "it was saved from a differently configured adapter.")
        loaded.append(name)
    if not loaded:
        raise LoadError(f"no adapter weights for {sorted(peft_model.peft_config)} in checkpoint {str(root)!r}.")
    return loaded


class AdapterTrainerMixin:
    """Makes a ``transformers.Trainer`` (sub)class treat peft-core models as PEFT models (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        model = kwargs.get("model", args[0] if args else None)
        peft = peft_core_model(model)
        if peft is not None:
            # what transformers reads to accept a quantized base that has adapters attached
            peft.__dict__["_hf_peft_config_loaded"] = True
        super().__init__(*args, **kwargs)
        peft = peft_core_model(self.model)
        if peft is None:
            return
        base_class = type(peft.get_base_model())
        if self.args.label_names is None:
            self.label_names = find_labels(base_class)
        self.can_return_loss = can_return_loss(base_class)
        if self.args.activation_checkpointing:
            kwargs_gc = self.args.activation_checkpointing_kwargs or {}
            enable = getattr(peft.get_base_model(), "enable_input_require_grads", None)
            if kwargs_gc.get("use_reentrant", False) and callable(enable):
                enable()

    def _set_signature_columns_if_needed(self) -> None:
        peft = peft_core_model(self.model)
        if peft is not None and self._signature_columns is None:
            forward = inspect.signature(peft.get_base_model().forward).parameters
            self._signature_columns = list(forward) + ["label", "label_ids", *self.label_names]
        super()._set_signature_columns_if_needed()

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        peft = peft_core_model(self.accelerator.unwrap_model(self.model))
        if peft is None:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
        # adapter files only; the state dict a distributed wrapper gathered is honoured
        peft.save_pretrained(output_dir, state_dict=state_dict, is_main_process=self.args.should_save)
        if not self.args.should_save:
            return
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        import torch

        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        peft = peft_core_model(model if model is not None else self.model)
        if peft is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_adapter_checkpoint(peft, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        peft = peft_core_model(self.model)
        if peft is None:
            return super()._load_best_model()
        load_adapter_checkpoint(peft, self.state.best_model_checkpoint)


class AdapterTrainer(AdapterTrainerMixin, Trainer):
    """``transformers.Trainer`` that saves and resumes peft-core adapters (adapter-only checkpoints)."""
