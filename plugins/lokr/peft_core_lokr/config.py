"""``LoKrConfig``: the field names, defaults and JSON of Hugging Face PEFT's LoKr config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from peft_core.errors import ConfigError
from peft_core.lycoris import LycorisConfig


@dataclass
class LoKrConfig(LycorisConfig):
    """LoKr: ``ΔW = kron(w1, w2) · alpha / r``, ``w1`` ``(a, c)``, ``w2`` ``(b, d)``, ``out = a·b``, ``in = c·d``.

    Each layer splits its sizes with :func:`peft_core.lycoris.factorization` (``decompose_factor``
    steers the split; ``-1`` picks factors near the square root). ``w2`` becomes a rank-``r``
    product when ``r`` is below half its larger side, and so does ``w1`` with ``decompose_both``.
    ``init_weights=True`` zeroes ``w1``, ``"lycoris"`` zeroes ``w2`` (both start at ``ΔW = 0``),
    ``False`` draws everything at random. ``rank_dropout_scale`` rescales the rows rank dropout keeps.
    """

    peft_type: Optional[str] = "LOKR"
    decompose_both: bool = False
    decompose_factor: int = -1
    rank_dropout_scale: bool = False
    init_weights: Union[bool, Literal["lycoris"]] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "LOKR"
        if not isinstance(self.init_weights, bool) and self.init_weights != "lycoris":
            raise ConfigError(f"init_weights must be True, False or 'lycoris', got {self.init_weights!r}.")
        for name in ("decompose_both", "rank_dropout_scale"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        factor = self.decompose_factor
        if isinstance(factor, bool) or not isinstance(factor, int) or (factor != -1 and factor <= 0):
            raise ConfigError(f"decompose_factor must be -1 (split near the square root) or a positive integer, "
                              f"got {factor!r}.")
