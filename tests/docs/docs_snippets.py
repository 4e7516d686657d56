"""Extract the fenced code blocks of the documentation pages, keeping their line numbers.

A block fenced as ```` ```python ```` is executable: the doc-snippet test runs every such
block of a page, in order, in one namespace. A block with a file name as its title
(```` ```python title="pkg/module.py" ````, any language) is a file the reader writes: the
test writes it to that path, relative to the page's working directory, at that point of the
page. A block that must be shown but cannot run (it needs a GPU, a download, a package not
installed in the test environment) is fenced as ```` ```py ````, which renders the same;
keep those rare.
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

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`{]*)(?P<rest>[^`]*)$")
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')
_FILE_NAME = re.compile(r"^[\w./-]+\.\w+$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to docs/
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    title: str = ""

    @property
    def file(self) -> str | None:
        """The path this block is the content of, when its title is a file name."""
        return self.title if _FILE_NAME.match(self.title) else None

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
        title = _TITLE.search(m["rest"] or "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: unclosed code fence")
        code = textwrap.dedent("\n".join(body)) + "\n"
        out.append(Block(str(path.relative_to(root)), i + 2, lang, code, title["title"] if title else ""))
        i = j + 1
    return out


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def executable_pages() -> list[Path]:
    return [p for p in pages() if any(b.lang == RUN or b.file for b in blocks(p))]


def run_page(page: Path) -> dict:
    """Run a page: write its file blocks, execute its ```python blocks, in order; return the namespace."""
    namespace: dict = {"__name__": "__doc_snippet__"}
    for block in blocks(page):
        if block.file:
            target = Path(block.file)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
        elif block.lang == RUN:
            exec(block.compiled(), namespace)  # noqa: S102 - running our own documentation
    return namespace
