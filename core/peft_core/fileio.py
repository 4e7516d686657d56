"""Atomic file writes: a save either fully replaces the old file or leaves it untouched.

Data goes to a temporary file in the same directory (same filesystem, so the final
``os.replace`` is atomic), is flushed and fsynced, and only then renamed over the target.
An exception or a kill mid-write leaves the previous file intact.

``durable=False`` skips the fsync (still atomic against a failed or killed save, not
against a power cut): for files nothing loads, like the model card, where the sync was
a third of ``save_pretrained``'s time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically (fsynced first if ``durable``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | os.PathLike, text: str, durable: bool = True) -> None:
    with atomic_path(target, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
