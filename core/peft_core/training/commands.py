"""``peft-core train``, ``inspect``, ``merge`` and ``plot``.

Registered through :data:`peft_core.cli.COMMAND_MODULES`. Heavy imports (transformers,
matplotlib) happen inside the handlers, so ``peft-core --help`` stays quick.
``train`` runs unchanged under ``torchrun --nproc-per-node N --no-python peft-core train ...``:
each process joins the group, the adapter is written once by rank 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from ..cli import command
from ..errors import ConfigError
from .loop import TrainSettings

RUN_FILES = ("adapter/", "base_model/ (when no --model)", "loss_log.csv", "summary.json")


def _train_args(parser: argparse.ArgumentParser) -> None:
    from ..plugins import registry
    from .methods import add_method_options

    defaults = TrainSettings()
    parser.add_argument("--model", help="local Hugging Face model directory (default: a tiny Llama built from a config)")
    parser.add_argument("--dataset", help="local .jsonl/.json/.txt/.csv/.parquet file or a datasets save_to_disk "
                                          "directory (default: the embedded corpus)")
    parser.add_argument("--text-field", help="record field holding the text (default: text, or prompt+completion, ...)")
    parser.add_argument("--out", help="run directory (default: runs/<method>-<time>); receives " + ", ".join(RUN_FILES))
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per training window (default: 64)")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm, help="0 disables clipping")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between evaluations")
    parser.add_argument("--eval-fraction", type=float, default=0.1,
                        help="share of the text held out for evaluation when the dataset has no eval split")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (default: float32)")
    parser.add_argument("--load-in-4bit", action="store_true", help="quantize the base to 4-bit NF4 (bitsandbytes)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    parser.add_argument("--distributed", choices=("ddp", "fsdp"), default="ddp",
                        help="strategy under torchrun with several processes (default: ddp; fsdp = FSDP2 fully_shard)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="vocabulary of the tokenizer trained for the default tiny model")
    parser.add_argument("--prompt", help="text to continue at the end (default: the first words of the data)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the final reload / merge / generate check")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_method_options(parser, list(registry()))


@command("train", "fine-tune a model with any installed method on local data; saves the adapter and a loss log",
         _train_args)
def train_command(args: argparse.Namespace) -> int:
    import torch

    from ..model import get_peft_model
    from ..plugins import registry
    from . import distributed as D
    from .data import TokenData, load_texts
    from .loop import LossLog, train
    from .methods import build_config, given_fields
    from .models import DEFAULT_VOCAB, build_tiny_llama, check_model_dir, load_model, load_tokenizer

    ctx = D.init_distributed(args.device)
    try:
        spec = registry().get(args.method)
        config = build_config(spec, given_fields(args), task_type="CAUSAL_LM")
        if args.out is None and ctx.distributed:
            raise ConfigError("with several processes, pass --out so every rank writes to the same run directory.")
        run = Path(args.out or f"runs/{spec.name.lower()}-{time.strftime('%Y%m%d-%H%M%S')}")
        settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                                 warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
                                 eval_every=args.eval_every, seed=args.seed)
        settings.check()
        say = print if ctx.is_main_process else (lambda *a, **k: None)
        splits = load_texts(args.dataset, args.text_field)
        model_dir = Path(args.model) if args.model else run / "base_model"
        if args.model is None:
            if ctx.is_main_process:
                build_tiny_llama(model_dir, splits.train, seed=args.seed, vocab_size=args.vocab_size or DEFAULT_VOCAB)
                say(f"built a tiny Llama and a tokenizer from config in {model_dir}")
            D.barrier(ctx)
        elif args.vocab_size is not None:
            raise ConfigError("--vocab-size only applies to the default tiny model; the tokenizer of --model is used.")
        model_dir = check_model_dir(model_dir).resolve()
        tokenizer = load_tokenizer(model_dir)
        data = TokenData.build(tokenizer, splits, args.seq_len, args.eval_fraction)
        say(f"data: {splits.source}: {len(data.train):,d} training / {len(data.eval):,d} eval tokens, "
            f"windows of {data.seq_len}")
        base = load_model(model_dir, "CAUSAL_LM", args.dtype, args.load_in_4bit)
        if not args.load_in_4bit:
            base.to(ctx.device)
        torch.manual_seed(args.seed)  # adapter init: reproducible, and the same on every rank (FSDP2 does not broadcast)
        peft_model = get_peft_model(base, config)
        trainable, total = peft_model.get_nb_trainable_parameters()
        say(f"{spec.name} adapter: {trainable:,d} trainable of {total:,d} parameters "
            f"({100 * trainable / max(total, 1):.2f}%)" + (f", {ctx.world_size} processes ({args.distributed})"
                                                          if ctx.distributed else ""))
        wrapped = D.wrap_model(peft_model, ctx, args.distributed)
        log = LossLog(run / "loss_log.csv") if ctx.is_main_process else None
        started = time.perf_counter()
        history = train(wrapped, data, settings, ctx, log=log, progress=not args.quiet)
        seconds = time.perf_counter() - started
        adapter_dir = run / "adapter"
        D.save_adapter(wrapped, adapter_dir, ctx)
        result = history.summary()
        say(f"loss: train {result['first_train_loss']:.3f} -> {result['last_train_loss']:.3f}, "
            f"eval {result['first_eval_loss']:.3f} -> {result['last_eval_loss']:.3f} "
            f"({settings.steps} steps, {seconds:.1f} s)")
        if ctx.is_main_process:
            tokenizer.save_pretrained(adapter_dir)
            say(f"adapter saved to {adapter_dir}")
            verify = None
            if not args.no_verify and ctx.distributed and args.distributed == "fsdp":
                say("reload/merge check skipped under FSDP (the live model is sharded); `peft-core merge` checks it")
            elif not args.no_verify:
                prompt = args.prompt or " ".join(splits.train[0].split()[:2])
                verify = _verify(peft_model, model_dir, adapter_dir, tokenizer, data, args, prompt, say)
            summary = {"method": spec.name, "model": str(model_dir), "dataset": splits.source,
                       "config": config.to_dict(), "settings": dataclasses.asdict(settings), "seq_len": data.seq_len,
                       "world_size": ctx.world_size, "distributed": args.distributed if ctx.distributed else None,
                       "trainable_parameters": trainable, "train_seconds": round(seconds, 2), **result,
                       "adapter": str(adapter_dir), "verify": verify}
            (run / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
            say(f"run directory: {run} (plot it with `peft-core plot {run}`)")
        D.barrier(ctx)
    finally:
        D.shutdown(ctx)
    return 0


def _verify(peft_model, model_dir, adapter_dir, tokenizer, data, args, prompt, say) -> dict:
    """Reload the saved adapter into a fresh base, merge it, and generate: proof the files are complete."""
    from ..errors import UnsupportedOperation
    from ..model import PeftModel
    from .merge import generate_text, max_logit_difference
    from .models import load_model

    probe = data.eval[: data.seq_len].unsqueeze(0).to(next(peft_model.parameters()).device)
    peft_model.eval()
    fresh = load_model(model_dir, "CAUSAL_LM", args.dtype, args.load_in_4bit)
    reloaded = PeftModel.from_pretrained(fresh.to(probe.device) if not args.load_in_4bit else fresh, str(adapter_dir))
    reload_diff = max_logit_difference(peft_model, reloaded, probe)
    say(f"reloaded adapter: max |logit difference| = {reload_diff:.2e}")
    out = {"reload_max_logit_diff": reload_diff, "prompt": prompt}
    merged, which = reloaded, "adapter model"
    if args.load_in_4bit:
        # merging into 4-bit weights requantizes them and rounds the adapter away;
        # `peft-core merge` merges into the full-precision base instead
        say("merge check skipped for a 4-bit base (use `peft-core merge BASE ADAPTER OUT` for a full-precision merge)")
    else:
        try:
            merged, which = reloaded.merge_and_unload(safe_merge=True), "merged model"
            out["merge_max_logit_diff"] = max_logit_difference(peft_model, merged, probe)
            say(f"merged model: max |logit difference| vs adapter = {out['merge_max_logit_diff']:.2e}")
        except UnsupportedOperation as exc:
            say(f"merge skipped: {exc}")
    out["generation"] = generate_text(merged, tokenizer, prompt)
    say(f"generation ({which}): {out['generation']!r}")
    return out


# -- inspect -----------------------------------------------------------------------------


def _inspect_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", metavar="ADAPTER_DIR", help="directory with adapter_config.json and weights")
    parser.add_argument("--base", help="base model directory to check against (default: the config's base model)")
    parser.add_argument("--no-base-check", action="store_true", help="do not build the base model to check the fit")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


@command("inspect", "show a saved adapter: method, targets, ranks, parameters, base model, compatibility",
         _inspect_args)
def inspect_command(args: argparse.Namespace) -> int:
    from .inspection import inspect_adapter, render

    report = inspect_adapter(args.adapter, base=args.base, check_base=not args.no_base_check)
    if args.json:
        print(json.dumps({
            "path": str(report.path), "method": report.peft_type, "base_model": report.config.get("base_model_name_or_path"),
            "parameters": report.parameter_count, "compatible": report.compatible,
            "targets": [dataclasses.asdict(t) for t in report.targets],
            "checks": [{"check": c, "result": r, "detail": d} for c, r, d in report.checks],
        }, indent=2))
    else:
        print(render(report))
    return 0 if report.compatible else 1


# -- merge -------------------------------------------------------------------------------


def _merge_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="BASE", help="base model directory")
    parser.add_argument("adapter", metavar="ADAPTER", help="adapter directory")
    parser.add_argument("out", metavar="OUT", help="where to write the merged, standalone model")
    parser.add_argument("--dtype", default="float32", help="dtype to load and save the base in (default: float32)")
    parser.add_argument("--prompt", help="also print a greedy continuation of this text by the merged model")
    parser.add_argument("--no-check", action="store_true", help="skip comparing merged and unmerged outputs")


@command("merge", "merge an adapter into its base model and save a standalone model", _merge_args)
def merge_command(args: argparse.Namespace) -> int:
    from .merge import merge_adapter

    result = merge_adapter(args.base, args.adapter, args.out, dtype=args.dtype, prompt=args.prompt,
                           check=not args.no_check)
    print(f"merged model written to {result.out} (load it with AutoModel*.from_pretrained; no peft-core needed)")
    if result.logit_difference is not None:
        print(f"merged vs adapter: max |logit difference| = {result.logit_difference:.2e}")
    if result.generation is not None:
        print(f"generation: {result.generation!r}")
    return 0


# -- plot --------------------------------------------------------------------------------


def _plot_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="a `peft-core train` run directory (with loss_log.csv)")
    parser.add_argument("--out", help="PNG path (default: RUN_DIR/loss.png)")


@command("plot", "draw the loss curve of a training run as a PNG", _plot_args)
def plot_command(args: argparse.Namespace) -> int:
    from .plot import plot_run

    print(f"loss curve written to {plot_run(args.run, args.out)}")
    return 0
