"""Peak memory of a training step, measured in a fresh process per library.

RSS is only comparable between processes that do the same thing, so each measurement
runs in its own interpreter (``python -m benchmarks.memory``; not a fork: OpenMP thread
pools do not survive ``fork``) that imports only the library it measures, builds the
same model, then resets the kernel's high-water mark (``/proc/self/clear_refs``) and
wraps + trains one step. The reported number is the high-water mark minus the RSS at the
reset — the memory the library's adapters, activations, gradients and optimizer state
add — so import footprints do not blur it; the absolute peak goes to the details. On
CUDA the device's peak allocated memory is measured in-process instead.

The children run with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``), so every
large tensor is its own mapping and RSS follows the live tensors. With the adaptive default,
freed tensors may stay resident in the heap and be reused or not depending on the order of
earlier frees: identical runs of one library measured 167 and 273 MB, the library under
test a steady 195 MB; fixed, both measure 151 MB to within 1 %.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .fixtures import Lib, llama, token_batch


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def _step(lib: Lib, sizes: Any, device: str, model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    config = lib.LoraConfig(r=sizes.rank, lora_alpha=2 * sizes.rank, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = lib.get_peft_model(model, config)
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    ids = token_batch(sizes, sizes.batch, sizes.seq, device)
    peft_model(input_ids=ids, labels=ids).loss.backward()
    opt.step()


def _child(key: str, sizes: Any) -> dict[str, Any]:
    torch.set_num_threads(2)
    lib = Lib(key)
    model = llama(sizes)
    exact = _reset_peak()
    start_kb = _status_kb("VmRSS") or 0
    _step(lib, sizes, "cpu", model)
    if exact:
        peak_kb = _status_kb("VmHWM") or 0
    else:  # no clear_refs: the lifetime peak, an upper bound
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"delta_mb": (peak_kb - start_kb) / 1024, "peak_mb": peak_kb / 1024, "exact": exact}


def _spawn(key: str, sizes: Any) -> subprocess.Popen:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # glibc's initial threshold, kept fixed (see above)
    cmd = [sys.executable, "-m", "benchmarks.memory", key, json.dumps(dataclasses.asdict(sizes))]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)


def _collect(key: str, proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {key} failed (exit {proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _cuda(lib: Lib, sizes: Any, device: str) -> dict[str, Any]:
    model = llama(sizes, device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    _step(lib, sizes, device, model)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model
    torch.cuda.empty_cache()
    return {"delta_mb": (peak - start) / 2**20, "peak_mb": peak / 2**20, "exact": True}


def peak_memory(ctx: Any) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``{lib: [MB added by wrap + step, …]}`` and details (absolute peaks, method).

    The children run concurrently: each measures only its own memory, and the harness
    waits anyway, so this halves the wall time (mostly interpreter start-up and imports).
    """
    samples: dict[str, list[float]] = {k: [] for k in ctx.libs}
    peaks: dict[str, list[float]] = {k: [] for k in ctx.libs}
    for _ in range(ctx.sizes.reps_rss):
        if ctx.device.startswith("cuda"):
            outs = {key: _cuda(lib, ctx.sizes, ctx.device) for key, lib in ctx.libs.items()}
        else:
            procs = {key: _spawn(key, ctx.sizes) for key in ctx.libs}
            outs = {key: _collect(key, proc) for key, proc in procs.items()}
        for key, out in outs.items():
            samples[key].append(out["delta_mb"])
            peaks[key].append(out["peak_mb"])
    how = "cuda max_memory_allocated" if ctx.device.startswith("cuda") else "own process, VmHWM after reset"
    return samples, {"absolute_peak_mb": peaks, "method": how}


if __name__ == "__main__":
    from .fixtures import Sizes

    print(json.dumps(_child(sys.argv[1], Sizes(**json.loads(sys.argv[2])))))
