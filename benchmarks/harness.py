"""Timing, results, the table, the JSON file and the command line.

Noise control, since the machines this runs on are shared: every workload times its
variants (peft-core, PEFT, sometimes the base model) *interleaved*, alternating their
order each repetition, and reports the median. Setup (building models, deep copies,
temporary directories) is never inside a timed region.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .fixtures import FULL, QUICK, Sizes, with_reps

DEFAULT_JSON = "bench-results.json"
THREADS = 2


@dataclass
class Result:
    """One workload's outcome.

    ``core``/``peft`` are the headline measurements (seconds, or MB for memory) whose
    quotient is the ``core÷PEFT`` column. Goals are either on that quotient
    (``goal_on="ratio"``) or on a library's own relative number, such as unmerged
    forward ÷ base forward (``goal_on="self"``), in which case ``core_metric`` and
    ``peft_metric`` hold it for each library.
    """

    name: str
    title: str
    unit: str = "s"
    core: float | None = None
    peft: float | None = None
    goal: str = ""
    goal_on: str = "ratio"
    limit: float | None = None
    core_metric: float | None = None
    peft_metric: float | None = None
    note: str = ""
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.core is None or self.peft is None or self.peft == 0:
            return None
        return self.core / self.peft

    @property
    def metric(self) -> float | None:
        return self.ratio if self.goal_on == "ratio" else self.core_metric

    @property
    def met(self) -> bool | None:
        if self.metric is None or self.limit is None:
            return None
        return self.metric <= self.limit

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(ratio=self.ratio, metric=self.metric, met=self.met)
        return out


# -- timing -------------------------------------------------------------------------------


class Clock:
    """Wall-clock timing that waits for the accelerator, so GPU runs time real work."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def call(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """``(seconds, fn())``."""
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - start, out

    def time(self, fn: Callable[[], Any]) -> float:
        return self.call(fn)[0]


def interleaved(variants: dict[str, Callable[[], float]], reps: int, warmup: int = 0) -> dict[str, list[float]]:
    """Run each variant ``reps`` times, alternating the order; each call returns its own seconds.

    Variants return their elapsed time themselves so they can keep setup out of it.
    """
    keys = list(variants)
    for _ in range(warmup):
        for key in keys:
            variants[key]()
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for i in range(reps):
        for key in keys if i % 2 == 0 else keys[::-1]:
            gc.collect()
            samples[key].append(variants[key]())
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- context given to workloads -----------------------------------------------------------


@dataclass
class Context:
    sizes: Sizes
    device: str
    clock: Clock
    quick: bool
    libs: dict[str, Any]


# -- running ------------------------------------------------------------------------------


def run_benchmarks(
    quick: bool = False,
    only: Sequence[str] | None = None,
    reps: int | None = None,
    device: str | None = None,
    sizes: Sizes | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> tuple[list[Result], dict[str, Any]]:
    """Run the selected workloads; return their results and the run's metadata."""
    from . import workloads
    from .fixtures import libs

    torch.set_num_threads(THREADS)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = sizes or (QUICK if quick else FULL)
    if reps is not None:
        sizes = with_reps(sizes, reps)
    selected = workloads.select(only)
    ctx = Context(sizes, device, Clock(device), quick, {lib.key: lib for lib in libs()})
    results: list[Result] = []
    started = time.perf_counter()
    for name, fn in selected:
        log(f"[bench] {name} …")
        t0 = time.perf_counter()
        try:
            result = fn(ctx)
        except Exception as exc:  # one broken workload must not hide the others
            result = Result(name=name, title=name, error=f"{type(exc).__name__}: {exc}")
            log(traceback.format_exc())
        gc.collect()
        log(f"[bench] {name} done in {time.perf_counter() - t0:.1f} s")
        results.append(result)
    meta = _meta(ctx, time.perf_counter() - started)
    return results, meta


def _meta(ctx: Context, seconds: float) -> dict[str, Any]:
    import peft
    import transformers

    import peft_core

    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": ctx.quick,
        "device": ctx.device,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "peft_core": peft_core.__version__,
        "sizes": dataclasses.asdict(ctx.sizes),
        "total_seconds": round(seconds, 1),
    }


# -- output -------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "MB":
        return f"{value:.0f} MB"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def table(results: Sequence[Result]) -> str:
    """The results as an aligned text table (``peft_core.tables.format_table``)."""
    from peft_core.tables import format_table

    headers = ["workload", "peft-core", "PEFT", "core÷PEFT", "goal", "peft-core value", "PEFT value", "met"]
    rows = []
    for r in results:
        if r.error:
            rows.append([r.name, "error", "", "", r.goal, "", "", r.error[:60]])
            continue
        if r.goal_on == "ratio":
            core_val, peft_val = fmt_ratio(r.ratio), ""
        else:
            core_val, peft_val = fmt_ratio(r.core_metric), fmt_ratio(r.peft_metric)
        met = {True: "yes", False: "NO", None: ""}[r.met]
        if r.note and r.core is None:
            core_val, met = r.note, ""
        rows.append([r.name, fmt_value(r.core, r.unit), fmt_value(r.peft, r.unit), fmt_ratio(r.ratio), r.goal,
                     core_val, peft_val, met])
    return format_table(headers, rows)


def write_json(path: str | os.PathLike, results: Sequence[Result], meta: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps({"meta": meta, "results": [r.to_json() for r in results]}, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    from . import workloads

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, tiny sizes (the CI smoke run)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this workload (repeatable, or comma-separated); see --list")
    parser.add_argument("--json", default=DEFAULT_JSON, metavar="PATH", help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument("--reps", type=int, help="override every repetition count")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, fn in workloads.WORKLOADS.items():
            print(f"{name:28s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    only = [n for item in args.only or [] for n in item.split(",") if n]
    try:
        results, meta = run_benchmarks(quick=args.quick, only=only or None, reps=args.reps, device=args.device)
    except KeyError as exc:
        parser.error(str(exc))
    print(table(results))
    print(f"\n{meta['device']}, {meta['threads']} threads, load average {meta['load_average']}, "
          f"{meta['total_seconds']} s; medians; core÷PEFT lower is better")
    write_json(args.json, results, meta)
    print(f"results: {args.json}")
    return 1 if any(r.error for r in results) else 0
