"""Extract the fenced code blocks of the documentation pages, keeping their line numbers.

A block fenced as ```` ```python ```` is executable: the doc-snippet test runs every such
block of a page, in order, in one namespace. A block that must be shown but cannot run
(it needs a GPU, a download, a package not installed in the test environment) is fenced
as ```` ```py ````, which renders the same; keep those rare.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RUN = "python"
SHOW_ONLY = "py"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`{]*)")


@dataclass(frozen=True)
class Block:
    page: str  # relative to docs/
    line: int  # 1-based line of the first code line
    lang: str
    code: str

    def compiled(self):
        # pad so that tracebacks point at the line in the Markdown file
        return compile("\n" * (self.line - 1) + self.code, f"docs/{self.page}", "exec")


def blocks(path: Path, root: Path = DOCS) -> list[Block]:
    """Every fenced block of one Markdown file, dedented to its fence."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["info"].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: unclosed code fence")
        code = textwrap.dedent("\n".join(body)) + "\n"
        out.append(Block(str(path.relative_to(root)), i + 2, lang, code))
        i = j + 1
    return out


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def executable_pages() -> list[Path]:
    return [p for p in pages() if any(b.lang == RUN for b in blocks(p))]
