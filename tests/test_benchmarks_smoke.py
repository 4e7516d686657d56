"""The benchmark harness in its 1-repetition, tiny-size mode, so it never rots.

No timing assertions (CI machines are noisy and shared): only that every workload runs
against both libraries and the JSON file holds a number for each side.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ lives at the repository root

from benchmarks import harness, workloads  # noqa: E402


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@pytest.mark.parity
def test_quick_run_writes_every_workload(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert harness.main(["--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    results = {r["name"]: r for r in data["results"]}
    assert set(results) == set(workloads.WORKLOADS)
    for name, r in results.items():
        assert not r["error"], f"{name}: {r['error']}"
        assert _number(r["peft"]), name
        if r["core"] is None:  # only an uninstalled method plugin may leave peft-core's side empty
            assert r["note"].startswith("n/a"), name
        else:
            assert _number(r["core"]) and _number(r["metric"]), name
    assert data["meta"]["quick"] is True
    table = capsys.readouterr().out
    assert "core÷PEFT" in table and all(name in table for name in results)


def test_unknown_workload_is_a_usage_error():
    with pytest.raises(SystemExit):
        harness.main(["--quick", "--only", "no_such_workload"])
