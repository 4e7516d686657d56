"""Item 4: a save that fails or is killed halfway leaves the previous adapter intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch

from peft_core import PeftModel
from peft_core.conformance.models import mlp
from reliability_support import IDS, lora_model

FILES = ("adapter_model.safetensors", "adapter_config.json")
REPO = Path(__file__).resolve().parents[2]


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _assert_previous_adapter_intact(directory: Path, before: dict[str, bytes], expected: torch.Tensor) -> None:
    assert _files(directory) == before
    loaded = PeftModel.from_pretrained(mlp(), directory)
    torch.testing.assert_close(loaded(IDS), expected)


def _half_written_save_file(tensors, filename, metadata=None):
    """Write the first half of a real safetensors file, then fail like a full disk would."""
    data = safetensors.torch.save(tensors, metadata=metadata)
    with open(filename, "wb") as fh:
        fh.write(data[: len(data) // 2])
    raise OSError(28, "No space left on device")


def _saved_twice(tmp_path):
    old, new = lora_model(seed=0), lora_model(seed=1, r=2)
    old.save_pretrained(tmp_path)
    return old(IDS).detach(), _files(tmp_path), new


def test_save_file_failing_halfway_keeps_old_files_and_leaves_no_temp_files(tmp_path, monkeypatch):
    expected, before, new = _saved_twice(tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", _half_written_save_file)
    with pytest.raises(OSError, match="No space"):
        new.save_pretrained(tmp_path)
    monkeypatch.undo()
    _assert_previous_adapter_intact(tmp_path, before, expected)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_bin_save_failing_halfway_keeps_old_bin(tmp_path, monkeypatch):
    old, new = lora_model(seed=0), lora_model(seed=1, r=2)
    old.save_pretrained(tmp_path, safe_serialization=False)
    expected, before = old(IDS).detach(), _files(tmp_path)
    real_save = torch.save

    def half(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half)
    with pytest.raises(OSError):
        new.save_pretrained(tmp_path, safe_serialization=False)
    monkeypatch.undo()
    _assert_previous_adapter_intact(tmp_path, before, expected)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fail_on", ["adapter_model.safetensors", "adapter_config.json"])
def test_rename_failing_keeps_old_files(tmp_path, monkeypatch, fail_on):
    expected, before, new = _saved_twice(tmp_path)
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == fail_on:
            raise OSError(5, "I/O error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"):
        new.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"
    if fail_on == "adapter_model.safetensors":
        _assert_previous_adapter_intact(tmp_path, before, expected)
    else:
        # the weights were replaced, the config was not: each file is still whole
        assert (tmp_path / "adapter_config.json").read_bytes() == before["adapter_config.json"]
        safetensors.torch.load_file(str(tmp_path / "adapter_model.safetensors"))


def test_config_write_failing_keeps_old_config(tmp_path, monkeypatch):
    expected, before, new = _saved_twice(tmp_path)

    def boom(self, text, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", boom)
    with pytest.raises(OSError):
        new.peft_config["default"].save_pretrained(tmp_path)
    monkeypatch.undo()
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 4
    _assert_previous_adapter_intact(tmp_path, before, expected)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


KILLED_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import safetensors.torch
    sys.path.insert(0, sys.argv[2])
    from reliability_support import lora_model

    def stall_halfway(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        with open(filename, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        print("HALFWAY", flush=True)
        time.sleep(120)

    safetensors.torch.save_file = stall_halfway
    lora_model(seed=1, r=2).save_pretrained(sys.argv[1])
    """
)


def test_sigkill_mid_save_keeps_old_adapter(tmp_path):
    expected, before, _ = _saved_twice(tmp_path)
    script = tmp_path.parent / f"{tmp_path.name}_child.py"
    script.write_text(KILLED_CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "core"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HALFWAY", proc.stderr.read()[-3000:] if proc.poll() is not None else line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # a kill leaves at most a hidden temp file; the adapter files themselves are the old ones
    visible = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert visible == set(before)
    assert {n: (tmp_path / n).read_bytes() for n in visible} == before
    PeftModel.from_pretrained(mlp(), tmp_path)
    torch.testing.assert_close(PeftModel.from_pretrained(mlp(), tmp_path)(IDS), expected)


def _record_fsyncs(monkeypatch) -> list[str]:
    """Names of the files and directories fsynced from now on, in order."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_durable_save_syncs_weights_config_and_their_directory(tmp_path, monkeypatch):
    """durable=True: both files a load needs reach the disk before they replace the old ones, and the
    renames are synced with the directory; the model card is not synced."""
    synced = _record_fsyncs(monkeypatch)
    out = tmp_path / "adapter"
    lora_model(seed=1, r=2).save_pretrained(out, durable=True)
    files = [name for name in synced if name != out.name]
    assert sorted(name.split(".tmp")[0].lstrip(".").rsplit(".", 1)[0] for name in files) == sorted(FILES)
    assert all(name.endswith(".tmp") for name in files)  # synced under the temporary name, before the rename
    assert synced.count(out.name) == len(FILES)  # the directory, after each rename
    assert (out / "README.md").exists()
    assert "durable" not in json.loads((out / "adapter_config.json").read_text())


def test_a_default_save_is_atomic_but_does_not_wait_for_the_disk(tmp_path, monkeypatch):
    synced = _record_fsyncs(monkeypatch)
    lora_model(seed=1, r=2).save_pretrained(tmp_path)
    assert synced == []
    assert {p.name for p in tmp_path.iterdir()} == {*FILES, "README.md"}  # no temporary file left behind
