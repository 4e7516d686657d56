"""The documentation site, built once per test session with ``mkdocs build --strict``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Build:
    returncode: int
    output: str
    site: Path

    def page(self, path: str) -> str:
        """The HTML of a built page, by its source path (``reference/cli.md``)."""
        stem = path.removesuffix(".md")
        html = self.site / (f"{stem}.html" if stem.split("/")[-1] == "index" else f"{stem}/index.html")
        assert html.is_file(), f"{path} was not built ({html} missing)"
        return html.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def docs_build(tmp_path_factory) -> Build:
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PEFT_CORE_STRICT_PLUGINS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    return Build(proc.returncode, proc.stdout + proc.stderr, site)
