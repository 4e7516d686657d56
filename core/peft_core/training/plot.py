"""``peft-core plot RUN_DIR``: the loss curve of a run as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import LoadError
from .loop import read_loss_log

LOG_NAME = "loss_log.csv"
PLOT_NAME = "loss.png"


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, smooth: int = 10) -> Path:
    """Draw training loss (raw and a moving average) and eval loss against the step; return the PNG path."""
    run = Path(run_dir)
    log = run / LOG_NAME
    if not log.is_file():
        raise LoadError(f"no {LOG_NAME} in {str(run)!r}; pass the --out directory of a `peft-core train` run.")
    rows = read_loss_log(log)
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if not train and not evals:
        raise LoadError(f"{log} has no loss values yet; wait for the run to log a step.")

    import matplotlib

    matplotlib.use("Agg")  # files only: works on servers without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="train loss (per step)")
        k = max(1, min(smooth, len(losses)))
        avg = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, avg, color="tab:blue", linewidth=2, label=f"train loss ({k}-step mean)")
    if evals:
        ax.plot(*zip(*evals), "o-", color="tab:orange", linewidth=2, label="eval loss")
    title = run.name
    summary = run / "summary.json"
    if summary.is_file():
        info = json.loads(summary.read_text(encoding="utf-8"))
        title = f"{info.get('method', '?')} on {Path(str(info.get('model', '?'))).name} — {run.name}"
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    target = Path(out) if out else run / PLOT_NAME
    fig.savefig(target)
    plt.close(fig)
    return target
