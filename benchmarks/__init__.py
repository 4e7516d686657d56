"""Side-by-side benchmarks of peft-core against Hugging Face PEFT.

Both libraries run in ONE process on the same models, inputs and seeds, so machine noise
hits them alike; measurements of the two are interleaved (and their order alternated)
repetition by repetition, and the table reports medians. Ratios are peft-core ÷ PEFT:
lower is better. Run ``python -m benchmarks`` (or ``make bench``); ``--quick`` is the
one-repetition, tiny-size smoke version CI runs so the harness never rots.
"""

from .harness import Result, main, run_benchmarks

__all__ = ["Result", "main", "run_benchmarks"]
