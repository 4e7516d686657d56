"""``LoHaConfig``: the field names, defaults and JSON of Hugging Face PEFT's LoHa config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from peft_core.errors import ConfigError
from peft_core.lycoris import LycorisConfig


@dataclass
class LoHaConfig(LycorisConfig):
    """LoHa: ``ΔW = (w1a w1b) ⊙ (w2a w2b) · alpha / r``, rank up to ``r²`` from ``4·r·(in+out)`` numbers.

    ``init_weights=True`` starts from ``ΔW = 0`` (``hada_w2_b`` zero); ``False`` draws every
    factor at random, so the adapter changes the model from the start.
    """

    peft_type: Optional[str] = "LOHA"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "LOHA"
        if not isinstance(self.init_weights, bool):
            raise ConfigError(
                f"init_weights must be True (start at ΔW = 0) or False (random), got {self.init_weights!r}."
            )
