"""Training adapters: the ``peft-core train`` loop, ``transformers.Trainer`` integration, multi-process runs.

* :mod:`.loop` — a small training loop (one process or under ``torchrun``);
* :mod:`.trainer` — :class:`AdapterTrainer`: ``transformers.Trainer`` with adapter-only
  checkpoints and resuming (imported on first use: transformers' Trainer is slow to import);
* :mod:`.distributed` — DDP / FSDP2 wrapping and saving once from the main process;
* :mod:`.data`, :mod:`.models` — local datasets and models, the tiny default model;
* :mod:`.commands` — ``peft-core train | inspect | merge | plot``.
"""

from __future__ import annotations

from typing import Any

from .distributed import DistContext, init_distributed, save_adapter, wrap_model
from .loop import History, LossLog, TrainSettings, evaluate, train

__all__ = ["AdapterTrainer", "AdapterTrainerMixin", "DistContext", "History", "LossLog", "TrainSettings", "evaluate",
           "init_distributed", "save_adapter", "train", "wrap_model"]


def __getattr__(name: str) -> Any:
    if name in ("AdapterTrainer", "AdapterTrainerMixin"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'peft_core.training' has no attribute {name!r}")
