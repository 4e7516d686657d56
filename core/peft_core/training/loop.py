"""A small, complete training loop for adapters: the engine behind ``peft-core train``.

Why not ``transformers.Trainer`` here: the command must start fast and run anywhere a
model forward runs, and its needs are few (AdamW over the trainable parameters, warmup
and cosine decay, gradient clipping, periodic evaluation, a loss log). The same loop runs
on one process or under ``torchrun`` (DDP or FSDP2); :mod:`peft_core.training.trainer`
covers training with ``transformers.Trainer`` instead.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .data import TokenData
from .distributed import DistContext, mean_across_ranks

LOG_COLUMNS = ("step", "loss", "lr", "eval_loss", "elapsed_s")


@dataclass
class TrainSettings:
    """Optimisation settings; the defaults fine-tune a tiny model visibly within a minute on a CPU."""

    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    eval_every: int = 50
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}.")
        if self.eval_every < 0:
            raise ConfigError(f"--eval-every must be 0 (only at the start and end) or positive, got {self.eval_every}.")


@dataclass
class History:
    """What happened: one row per step (``eval_loss`` filled on evaluation steps)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def train_losses(self) -> list[float]:
        return [r["loss"] for r in self.rows if r.get("loss") is not None]

    @property
    def eval_losses(self) -> list[tuple[int, float]]:
        return [(r["step"], r["eval_loss"]) for r in self.rows if r.get("eval_loss") is not None]

    def summary(self) -> dict[str, Any]:
        losses, evals = self.train_losses, self.eval_losses
        k = max(1, min(10, len(losses) // 5))  # average a few steps: single-batch losses are noisy
        return {
            "steps": len(losses),
            "first_train_loss": sum(losses[:k]) / k if losses else None,
            "last_train_loss": sum(losses[-k:]) / k if losses else None,
            "first_eval_loss": evals[0][1] if evals else None,
            "last_eval_loss": evals[-1][1] if evals else None,
        }


class LossLog:
    """``loss_log.csv`` in the run directory, appended (and flushed) as training goes, so a
    crashed or running job can still be plotted."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as fh:
            csv.writer(fh).writerow(LOG_COLUMNS)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow(["" if row.get(c) is None else row[c] for c in LOG_COLUMNS])


def read_loss_log(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """Rows of a ``loss_log.csv`` with numbers parsed (empty cells become ``None``)."""
    with Path(path).open(newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak: large early steps, gentle late ones."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenData, batch_size: int, ctx: DistContext) -> float:
    """Mean token loss over the fixed eval windows. Every rank runs every window (FSDP needs
    all ranks in each forward), so the result is the same everywhere."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in data.eval_batches(batch_size):
        batch = batch.to(ctx.device)
        loss = model(input_ids=batch, labels=batch).loss
        n = batch.numel() - batch.shape[0]  # causal LM: one target fewer than tokens per row
        total += loss.item() * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def train(
    model: nn.Module,
    data: TokenData,
    settings: TrainSettings,
    ctx: DistContext | None = None,
    log: LossLog | None = None,
    progress: bool = True,
    on_backward: Callable[[int, nn.Module], None] | None = None,
) -> History:
    """Train the trainable parameters of ``model`` (a PeftModel, maybe DDP/FSDP-wrapped).

    Each rank draws its own random windows (seeded by ``seed`` and rank), so N processes see
    N times the data per step. ``on_backward(step, model)`` runs after the backward pass and
    before the optimizer step — where gradients can be inspected.
    """
    from tqdm.auto import tqdm

    settings.check()
    ctx = ctx or DistContext()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters; was the adapter loaded with is_trainable=False?")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.warmup_steps, settings.steps))
    generator = torch.Generator().manual_seed(settings.seed * 1000 + ctx.rank)
    history = History()
    start = time.perf_counter()

    def record(row: dict[str, Any]) -> None:
        row["elapsed_s"] = round(time.perf_counter() - start, 3)
        history.rows.append(row)
        if log is not None and ctx.is_main_process:
            log.write(row)

    record({"step": 0, "loss": None, "lr": None, "eval_loss": evaluate(model, data, settings.batch_size, ctx)})
    bar = tqdm(range(1, settings.steps + 1), desc="training", disable=not (progress and ctx.is_main_process),
               dynamic_ncols=True)
    bar.set_postfix(eval_loss=f"{history.rows[0]['eval_loss']:.3f}")
    model.train()
    for step in bar:
        batch = data.batch(settings.batch_size, generator).to(ctx.device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        if on_backward is not None:
            on_backward(step, model)
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step, "loss": mean_across_ranks(loss.item(), ctx), "lr": lr, "eval_loss": None}
        if step == settings.steps or (settings.eval_every and step % settings.eval_every == 0):
            row["eval_loss"] = evaluate(model, data, settings.batch_size, ctx)
            if ctx.is_main_process and progress:
                bar.write(f"step {step}: eval loss {row['eval_loss']:.4f}")
        record(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.1e}")
    bar.close()
    model.eval()
    return history
