"""Mixed-batch routing: which rows of a batch each adapter applies to.

``model(**inputs, adapter_names=[...])`` names one adapter (or ``"__base__"``) per row. The
rows are grouped by adapter once — not once per layer — and every adapter layer reuses the
same index tensors.

Rows a layer sees are not always the rows the user passed: ``generate`` repeats every input
row ``num_beams`` (or ``num_return_sequences``) times with ``repeat_interleave``, and an
encoder-decoder's encoder still sees the original rows while its decoder sees the repeated
ones. So the plan is made per row count: a layer seeing ``k·B`` rows for ``B`` names gives
row ``i`` to the adapter of input row ``i // k``. Beam search only reorders beams within an
input row's block, so this stays right for the whole generation; it also covers layers that
flatten ``(batch, tokens)`` into rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import AdapterNameError
from .names import BASE_ADAPTER_NAME


class RoutingPlan:
    """Row indices per adapter for a mixed batch, computed once per (row count, device)."""

    def __init__(self, adapter_names: Sequence[str]) -> None:
        self.adapter_names = list(adapter_names)
        self._plans: dict[tuple[int, torch.device], list[tuple[str, torch.Tensor]]] = {}

    def for_rows(self, n_rows: int, device: torch.device | str = "cpu") -> list[tuple[str, torch.Tensor]]:
        """``[(adapter, row indices)]`` for a layer input with ``n_rows`` rows (``__base__`` rows omitted)."""
        device = torch.device(device)
        key = (n_rows, device)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        n_names = len(self.adapter_names)
        if n_names == 0 or n_rows % n_names:
            raise AdapterNameError(
                f"adapter_names has {n_names} entries but a layer received {n_rows} rows, which is not a multiple; "
                "pass one adapter name per input row."
            )
        repeat = n_rows // n_names
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(self.adapter_names):
            groups.setdefault(name, []).extend(range(i * repeat, (i + 1) * repeat))
        plan = [
            (name, torch.tensor(rows, dtype=torch.long, device=device))
            for name, rows in groups.items()
            if name != BASE_ADAPTER_NAME
        ]
        self._plans[key] = plan
        return plan

    def row_names(self, n_rows: int) -> list[str]:
        """The adapter (or ``__base__``) of each of ``n_rows`` layer rows, for layers that gather per row."""
        self.for_rows(n_rows)  # same check of the row count
        repeat = n_rows // len(self.adapter_names)
        return [name for name in self.adapter_names for _ in range(repeat)]

    def __iter__(self):
        """The plan for the batch as given (one row per name), for callers that need no expansion."""
        return iter(self.for_rows(len(self.adapter_names)))
