"""Two real processes on CPU (gloo, 127.0.0.1 only), launched with ``torchrun`` as a user would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = launcher + ["--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                      "--master-port", str(_free_port()), str(WORKER), str(out), "ddp", "fsdp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    written = sorted(p.name for p in out.glob("*.json"))  # tells a crash in training from one at exit
    assert proc.returncode == 0, f"results written: {written}\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    return {(s, r): json.loads((out / f"{s}-rank{r}.json").read_text()) for s in ("ddp", "fsdp") for r in (0, 1)}


def test_ddp_gradients_identical_and_adapter_saved_once(two_ranks):
    r0, r1 = two_ranks["ddp", 0], two_ranks["ddp", 1]
    assert r0["world_size"] == 2
    assert r0["grad_checks"] == 10 and r1["grad_checks"] == 10
    assert r0["first_batches_differ"]  # different data per rank, yet after all-reduce:
    assert r0["grad_max_diff_across_ranks"] == 0.0 and r1["grad_max_diff_across_ranks"] == 0.0
    assert r0["param_max_diff_across_ranks"] == 0.0
    assert (r0["adapter_files_written"], r1["adapter_files_written"]) == (1, 0)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(r0["saved_files"])
    for r in (r0, r1):
        assert r["reloaded_keys"] == r["adapter_keys"] > 0
        assert r["reload_max_diff"] == 0.0
    assert r0["last_train_loss"] < r0["first_train_loss"] - 0.2


def test_fsdp2_shards_trains_and_matches_ddp(two_ranks):
    r0, r1 = two_ranks["fsdp", 0], two_ranks["fsdp", 1]
    assert r0["sharded"] and r1["sharded"]  # parameters became DTensor shards: FSDP2 works on CPU/gloo here
    assert (r0["adapter_files_written"], r1["adapter_files_written"]) == (1, 0)
    assert r0["param_max_diff_across_ranks"] == 0.0  # gathered full adapters agree
    for r in (r0, r1):
        assert r["reload_max_diff"] == 0.0 and r["reloaded_keys"] == r["adapter_keys"] > 0
    assert r0["last_train_loss"] < r0["first_train_loss"] - 0.2
    # same init, same per-rank data: FSDP2 must land where DDP did, up to reduction order
    assert r0["max_diff_vs_ddp"] < 1e-4, r0["max_diff_vs_ddp"]
