"""One rank of the multi-process test, started by ``torchrun`` from test_distributed.py.

Trains a LoRA adapter on a tiny Llama with the library's own loop, first under DDP, then
under FSDP2, and writes what it observed to ``OUT/<strategy>-rank<N>.json``: gradient
differences between ranks, weight differences between ranks, how often this rank wrote
adapter files, and how far the saved adapter reloads from the live one.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import peft_core.model
from peft_core import LoraConfig, PeftModel, get_peft_model
from peft_core.conformance.models import VOCAB, tiny_llama
from peft_core.training import TrainSettings, init_distributed, save_adapter, train, wrap_model
from peft_core.training.data import TokenData
from peft_core.training.distributed import gathered_adapter_state, unwrap


def _all_gather(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return out


def _model() -> PeftModel:
    base = tiny_llama(initializer_range=0.15)
    torch.manual_seed(1234)  # same adapter init on every rank (FSDP2 shards each rank's local copy)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))


def main() -> None:
    out = Path(sys.argv[1])
    ctx = init_distributed("cpu")
    writes = {"n": 0}
    real_save = peft_core.model.save_weights

    def counting_save(*args, **kwargs):
        writes["n"] += 1
        return real_save(*args, **kwargs)

    peft_core.model.save_weights = counting_save  # count adapter files this rank writes
    stream = (torch.arange(3000) * 7 + torch.arange(3000) // 50) % VOCAB
    data = TokenData(train=stream[:2700], eval=stream[2700:], seq_len=24)
    settings = TrainSettings(steps=10, batch_size=4, lr=2e-2, warmup_steps=2, eval_every=0)
    finals = {}
    for strategy in sys.argv[2:]:
        writes["n"] = 0
        model = wrap_model(_model(), ctx, strategy)
        grad_diffs: list[float] = []

        def check_grads(step: int, wrapped) -> None:
            if strategy != "ddp":
                return  # FSDP2 gradients are shards: each rank holds a different piece
            flat = torch.cat([p.grad.flatten() for p in wrapped.parameters() if p.requires_grad])
            gathered = _all_gather(flat, ctx.world_size)
            grad_diffs.append(max((g - gathered[0]).abs().max().item() for g in gathered))

        history = train(model, data, settings, ctx, progress=False, on_backward=check_grads)
        target = out / strategy
        save_adapter(model, target, ctx)
        live = gathered_adapter_state(unwrap(model))  # collective under FSDP2
        flat = torch.cat([v.flatten() for v in live.values()])
        param_diff = max((g - flat).abs().max().item() for g in _all_gather(flat, ctx.world_size))
        reloaded = PeftModel.from_pretrained(tiny_llama(initializer_range=0.15), str(target))
        reload_state = {k: v for k, v in reloaded.state_dict().items() if k in live}
        reload_diff = max((reload_state[k] - live[k]).abs().max().item() for k in live)
        finals[strategy] = flat
        summary = history.summary()
        result = {
            "strategy": strategy, "rank": ctx.rank, "world_size": ctx.world_size,
            "grad_max_diff_across_ranks": max(grad_diffs) if grad_diffs else None, "grad_checks": len(grad_diffs),
            "param_max_diff_across_ranks": param_diff, "adapter_files_written": writes["n"],
            "reload_max_diff": reload_diff, "reloaded_keys": len(reload_state), "adapter_keys": len(live),
            "sharded": any(type(p).__name__ == "DTensor" for p in unwrap(model).parameters()),
            "first_train_loss": summary["first_train_loss"], "last_train_loss": summary["last_train_loss"],
            "first_eval_loss": summary["first_eval_loss"], "last_eval_loss": summary["last_eval_loss"],
            "saved_files": sorted(os.listdir(target)),
        }
        # the loop seeds each rank's windows by rank: the ranks trained on different batches
        first = data.batch(settings.batch_size, torch.Generator().manual_seed(settings.seed * 1000 + ctx.rank))
        result["first_batches_differ"] = not torch.equal(*_all_gather(first, ctx.world_size))
        if "ddp" in finals and strategy != "ddp":
            result["max_diff_vs_ddp"] = (finals[strategy] - finals["ddp"]).abs().max().item()
        (out / f"{strategy}-rank{ctx.rank}.json").write_text(json.dumps(result, indent=2))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    faulthandler.enable()  # a rank that dies on a signal prints where (every thread's Python stack)
    main()
    # Everything this rank had to do and report is done and written: leave without the
    # interpreter's teardown. gloo's worker threads outlive destroy_process_group here (seen
    # in /proc: both pt_gloo_runloop threads are still there after it and a full collection),
    # and CI once saw a rank abort with "terminate called without an active exception" —
    # the mark of a C++ thread told to exit while it waits for the GIL of a finalizing
    # interpreter. Torch's teardown is not what this test checks.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
