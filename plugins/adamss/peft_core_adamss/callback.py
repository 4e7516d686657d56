"""``AdamssAsaCallback``: adaptive subspace allocation from a ``transformers.Trainer`` (``AdapterTrainer`` too).

Imported on first use (``peft_core_adamss.AdamssAsaCallback``), so the plugin itself never
imports transformers. The callback has no settings: everything comes from the adapter's
``AdamssConfig``. Custom loops call ``model.base_model.update_and_allocate(step)`` instead.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import TrainerCallback

from .allocation import update_and_allocate


def _tuner(model: nn.Module | None) -> Any:
    """The peft-core tuner behind ``model`` (a PeftModel, possibly inside a DDP/accelerate wrapper), or None."""
    from peft_core.errors import LoadError
    from peft_core.serialization import tuner_of

    while model is not None:
        try:
            return tuner_of(model)
        except LoadError:
            model = getattr(model, "module", None)
    return None


class AdamssAsaCallback(TrainerCallback):
    """Calls ``update_and_allocate(state.global_step)`` after every optimizer step, before gradients are cleared."""

    def on_optimizer_step(
        self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any
    ) -> Any:
        tuner = _tuner(model)
        if tuner is not None:
            update_and_allocate(tuner, state.global_step)
        return control
