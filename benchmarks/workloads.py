"""The workloads of issue 9, each a function ``Context -> Result``.

Every workload builds one model from a seed and gives each library its own deep copy,
wraps it with the same config under the same seed, and feeds both the same inputs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .fixtures import Lib, clone, linear_stack, llama, token_batch
from .harness import Context, Result, interleaved, median

WORKLOADS: dict[str, Callable[[Context], Result]] = {}


def workload(fn: Callable[[Context], Result]) -> Callable[[Context], Result]:
    WORKLOADS[fn.__name__] = fn
    return fn


def select(only: Sequence[str] | None) -> list[tuple[str, Callable[[Context], Result]]]:
    if not only:
        return list(WORKLOADS.items())
    unknown = [n for n in only if n not in WORKLOADS]
    if unknown:
        raise KeyError(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    return [(n, WORKLOADS[n]) for n in WORKLOADS if n in only]


def _lora(lib: Lib, ctx: Context, **kwargs: Any) -> Any:
    kwargs.setdefault("r", ctx.sizes.rank)
    kwargs.setdefault("lora_alpha", 2 * kwargs["r"])
    kwargs.setdefault("target_modules", "all-linear")
    return lib.LoraConfig(**kwargs)


def _wrap(lib: Lib, ctx: Context, model: torch.nn.Module, seed: int = 0, **kwargs: Any) -> Any:
    torch.manual_seed(seed)  # same adapter init in both libraries
    return lib.get_peft_model(model, _lora(lib, ctx, **kwargs))


def _pair_result(name: str, title: str, samples: dict[str, list[float]], goal: str, limit: float, **kw: Any) -> Result:
    # each repetition runs both libraries back to back, so its own ratio cancels slow drifts of a shared
    # machine's speed; the median of those is kept next to the ratio of medians the table shows
    paired = [c / p for c, p in zip(samples["core"], samples["peft"]) if p]
    return Result(name=name, title=title, core=median(samples["core"]), peft=median(samples["peft"]), goal=goal,
                  limit=limit, details={"samples": samples, "median_paired_ratio": median(paired) if paired else None},
                  **kw)


# -- targeting and injection --------------------------------------------------------------


def _inject(ctx: Context, target_modules: Any) -> dict[str, list[float]]:
    def variant(lib: Lib) -> Callable[[], float]:
        def run() -> float:
            model = linear_stack(ctx.sizes)
            config = lib.LoraConfig(r=8, target_modules=target_modules)
            start = time.perf_counter()
            lib.get_peft_model(model, config)
            return time.perf_counter() - start

        return run

    return interleaved({k: variant(lib) for k, lib in ctx.libs.items()}, ctx.sizes.reps_inject,
                       ctx.sizes.warmup_inject)


@workload
def get_peft_model_all_linear(ctx: Context) -> Result:
    """get_peft_model on nn.Sequential of N Linear(64,64), target_modules='all-linear'."""
    samples = _inject(ctx, "all-linear")
    return _pair_result("get_peft_model_all_linear", f"get_peft_model, {ctx.sizes.n_linear} Linear, all-linear",
                        samples, "≤ 0.1 × PEFT", 0.1)


@workload
def get_peft_model_names(ctx: Context) -> Result:
    """get_peft_model on the same model with a list of explicit module names."""
    names = [str(i) for i in range(0, ctx.sizes.n_linear, max(1, ctx.sizes.n_linear // ctx.sizes.n_names))]
    samples = _inject(ctx, names[: ctx.sizes.n_names])
    return _pair_result("get_peft_model_names", f"get_peft_model, {ctx.sizes.n_names} explicit names", samples,
                        "≤ 0.1 × PEFT", 0.1)


# -- training -----------------------------------------------------------------------------


def _trainer(lib: Lib, ctx: Context, base: torch.nn.Module, ids: torch.Tensor, **kwargs: Any) -> tuple[Callable[[], float], list[float]]:
    """A function timing one fwd+bwd+AdamW step of ``lib``'s LoRA model; and the losses it saw."""
    model = _wrap(lib, ctx, clone(base), task_type="CAUSAL_LM", **kwargs)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses: list[float] = []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())

    return (lambda: ctx.clock.time(step)), losses


@workload
def train_step(ctx: Context) -> Result:
    """LoRA all-linear training step (forward + backward + AdamW) on a small Llama."""
    s = ctx.sizes
    base = llama(s, ctx.device)
    ids = token_batch(s, s.batch, s.seq, ctx.device)
    runs = {k: _trainer(lib, ctx, base, ids) for k, lib in ctx.libs.items()}
    samples = interleaved({k: fn for k, (fn, _) in runs.items()}, s.reps_step, s.warmup)
    result = _pair_result("train_step", f"LoRA r={s.rank} all-linear train step, Llama h={s.hidden} "
                          f"L={s.layers}, batch {s.batch}×{s.seq}", samples, "≤ 0.95 × PEFT", 0.95)
    result.details["first_loss"] = {k: losses[0] for k, (_, losses) in runs.items()}  # same seeds → same loss
    return result


@workload
def dora_step(ctx: Context) -> Result:
    """DoRA training step ÷ LoRA training step of the same library (same model and batch)."""
    s = ctx.sizes
    result = Result(name="dora_step", title="DoRA step ÷ LoRA step", goal="≤ 1.15 × LoRA step", goal_on="self",
                    limit=1.15)
    base = llama(s, ctx.device)
    ids = token_batch(s, s.batch, s.seq, ctx.device)
    variants: dict[str, Callable[[], float]] = {}
    for key, lib in ctx.libs.items():
        if not lib.has_dora():
            result.note = "n/a (no DoRA plugin installed)"
            continue
        variants[f"{key}_lora"] = _trainer(lib, ctx, base, ids)[0]
        variants[f"{key}_dora"] = _trainer(lib, ctx, base, ids, use_dora=True)[0]
    samples = interleaved(variants, s.reps_step, s.warmup)
    med = {k: median(v) for k, v in samples.items()}
    for key in ctx.libs:
        if f"{key}_dora" in med:
            setattr(result, key, med[f"{key}_dora"])
            setattr(result, f"{key}_metric", med[f"{key}_dora"] / med[f"{key}_lora"])
    result.details = {"samples": samples}
    return result


# -- inference ----------------------------------------------------------------------------


def _inference(ctx: Context, merged: bool) -> tuple[dict[str, list[float]], dict[str, float]]:
    s = ctx.sizes
    base = llama(s, ctx.device)
    ids = token_batch(s, s.batch, s.seq, ctx.device)
    models: dict[str, Any] = {"base": base}
    for key, lib in ctx.libs.items():
        model = _wrap(lib, ctx, clone(base), init_lora_weights=False)
        if merged:
            model.merge_adapter()
        models[key] = model.eval()

    def forward(model: Any) -> Callable[[], float]:
        def run() -> None:
            with torch.inference_mode():
                model(input_ids=ids)

        return lambda: ctx.clock.time(run)

    samples = interleaved({k: forward(m) for k, m in models.items()}, s.reps_forward, s.warmup)
    with torch.inference_mode():  # the adapters must really be there (init_lora_weights=False)
        ref = base(input_ids=ids).logits
        diff = {k: (models[k](input_ids=ids).logits - ref).abs().max().item() for k in ctx.libs}
    return samples, diff


def _vs_base(name: str, title: str, ctx: Context, merged: bool, goal: str, limit: float) -> Result:
    samples, diff = _inference(ctx, merged)
    med = {k: median(v) for k, v in samples.items()}
    return Result(name=name, title=title, core=med["core"], peft=med["peft"], goal=goal, goal_on="self", limit=limit,
                  core_metric=med["core"] / med["base"], peft_metric=med["peft"] / med["base"],
                  details={"samples": samples, "base": med["base"], "max_abs_diff_to_base": diff})


@workload
def inference_unmerged(ctx: Context) -> Result:
    """Forward of the model with an unmerged LoRA adapter ÷ forward of the base model alone."""
    s = ctx.sizes
    return _vs_base("inference_unmerged", f"unmerged LoRA forward, batch {s.batch}×{s.seq}", ctx, False,
                    "≤ 1.10 × base", 1.10)


@workload
def inference_merged(ctx: Context) -> Result:
    """Forward after merge_adapter() ÷ forward of the base model alone."""
    s = ctx.sizes
    return _vs_base("inference_merged", f"merged LoRA forward, batch {s.batch}×{s.seq}", ctx, True,
                    "≤ 1.01 × base", 1.01)


@workload
def mixed_batch(ctx: Context) -> Result:
    """Forward of a batch whose rows use different adapters ÷ the same batch with one adapter."""
    s = ctx.sizes
    base = llama(s, ctx.device)
    ids = token_batch(s, s.mixed_batch, s.mixed_seq, ctx.device)
    names = [f"a{i}" for i in range(s.mixed_adapters)]
    rows = [names[i % len(names)] for i in range(s.mixed_batch)]
    variants: dict[str, Callable[[], float]] = {}
    outputs: dict[str, Any] = {}
    for key, lib in ctx.libs.items():
        torch.manual_seed(0)
        model = lib.mod.get_peft_model(clone(base), _lora(lib, ctx, init_lora_weights=False), adapter_name=names[0])
        for i, name in enumerate(names[1:], 1):
            torch.manual_seed(i)
            model.add_adapter(name, _lora(lib, ctx, init_lora_weights=False))
        model.set_adapter(names[0])
        model.eval()

        def run(model: Any = model, mixed: bool = False) -> None:
            with torch.inference_mode():
                if mixed:
                    return model(input_ids=ids, adapter_names=rows).logits
                return model(input_ids=ids).logits

        variants[f"{key}_single"] = lambda run=run: ctx.clock.time(run)
        variants[f"{key}_mixed"] = lambda run=run: ctx.clock.time(lambda: run(mixed=True))
        outputs[key] = run(mixed=True)
    samples = interleaved(variants, s.reps_forward, s.warmup)
    med = {k: median(v) for k, v in samples.items()}
    return Result(name="mixed_batch", title=f"mixed batch, {s.mixed_adapters} adapters, {s.mixed_batch}×{s.mixed_seq}",
                  core=med["core_mixed"], peft=med["peft_mixed"], goal="≤ 1.2 × one-adapter forward", goal_on="self",
                  limit=1.2, core_metric=med["core_mixed"] / med["core_single"],
                  peft_metric=med["peft_mixed"] / med["peft_single"],
                  details={"samples": samples,
                           "max_abs_diff_core_vs_peft": (outputs["core"] - outputs["peft"]).abs().max().item()})


# -- saving and loading -------------------------------------------------------------------


def _save_adapters(ctx: Context, base: torch.nn.Module, root: Path, count: int, rank: int) -> list[Path]:
    """``count`` different adapters saved by PEFT (the reference writer) for both libraries to load."""
    lib = ctx.libs["peft"]
    model = _wrap(lib, ctx, clone(base), r=rank, init_lora_weights=False)
    paths = []
    for i in range(count):
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
        model.save_pretrained(root / f"adapter{i}")
        paths.append(root / f"adapter{i}")
    return paths


@workload
def load_adapters(ctx: Context) -> Result:
    """from_pretrained then load_adapter, one adapter after another: the last load ÷ the first."""
    s = ctx.sizes
    base = llama(s, ctx.device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _save_adapters(ctx, base, Path(tmp), s.n_load, s.rank)

        def variant(lib: Lib) -> Callable[[], list[float]]:
            def run() -> list[float]:
                fresh = clone(base)
                seconds, model = ctx.clock.call(lambda: lib.from_pretrained(fresh, str(paths[0]), adapter_name="a0"))
                times = [seconds]
                for i, path in enumerate(paths[1:], 1):
                    times.append(ctx.clock.time(lambda: model.load_adapter(str(path), adapter_name=f"a{i}")))
                return times

            return run

        per_lib: dict[str, list[list[float]]] = {k: [] for k in ctx.libs}
        wrapped = {k: (lambda k=k, fn=variant(lib): per_lib[k].append(fn()) or 0.0) for k, lib in ctx.libs.items()}
        interleaved(wrapped, s.reps_load)
    # median over repetitions, per position in the sequence
    curve = {k: [median(col) for col in zip(*runs)] for k, runs in per_lib.items()}
    total = {k: sum(v) for k, v in curve.items()}
    return Result(name="load_adapters", title=f"from_pretrained + load_adapter ×{s.n_load - 1}, last ÷ first",
                  core=total["core"], peft=total["peft"], goal=f"flat: #{s.n_load} ≤ 1.2 × #1", goal_on="self",
                  limit=1.2, core_metric=curve["core"][-1] / curve["core"][0],
                  peft_metric=curve["peft"][-1] / curve["peft"][0],
                  details={"curve": curve,
                           "last_vs_first_load_adapter": {k: v[-1] / v[1] for k, v in curve.items() if len(v) > 2}})


def _save_models(ctx: Context, base: torch.nn.Module) -> dict[str, Any]:
    return {k: _wrap(lib, ctx, clone(base), r=ctx.sizes.save_rank, init_lora_weights=False) for k, lib in ctx.libs.items()}


@workload
def save_pretrained(ctx: Context) -> Result:
    """save_pretrained of an r=64 all-linear LoRA adapter."""
    s = ctx.sizes
    models = _save_models(ctx, llama(s, ctx.device))
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def variant(model: Any) -> Callable[[], float]:
            return lambda: ctx.clock.time(lambda: model.save_pretrained(Path(tmp) / f"out{next(counter)}"))

        samples = interleaved({k: variant(m) for k, m in models.items()}, s.reps_save, 1)
    return _pair_result("save_pretrained", f"save_pretrained, r={s.save_rank} all-linear", samples, "≤ 0.8 × PEFT", 0.8)


@workload
def from_pretrained(ctx: Context) -> Result:
    """PeftModel.from_pretrained of an r=64 all-linear LoRA adapter (saved by PEFT) into a fresh model."""
    s = ctx.sizes
    base = llama(s, ctx.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = _save_adapters(ctx, base, Path(tmp), 1, s.save_rank)[0]

        def variant(lib: Lib) -> Callable[[], float]:
            def run() -> float:
                model = clone(base)
                return ctx.clock.time(lambda: lib.from_pretrained(model, str(path)))

            return run

        samples = interleaved({k: variant(lib) for k, lib in ctx.libs.items()}, s.reps_save, 1)
    return _pair_result("from_pretrained", f"from_pretrained, r={s.save_rank} all-linear", samples, "≤ 0.8 × PEFT",
                        0.8)


# -- memory -------------------------------------------------------------------------------


@workload
def peak_rss(ctx: Context) -> Result:
    """Peak resident memory of wrapping + one training step, in a forked child per library."""
    from .memory import peak_memory

    samples, details = peak_memory(ctx)
    return Result(name="peak_rss", title="peak RSS of wrapping + one train step", unit="MB",
                  core=median(samples["core"]), peft=median(samples["peft"]), goal="≤ 1.0 × PEFT", limit=1.0,
                  details={"samples": samples, **details})
