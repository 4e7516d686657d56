"""Every ```python block of the documentation runs, page by page, so the docs cannot rot.

Each page's blocks run in order in one fresh namespace, in an empty temporary working
directory (pages save adapters to relative paths). Plugins a page registers in-process are
removed afterwards so pages stay independent.
"""

from __future__ import annotations

import sys

import pytest

from docs_snippets import DOCS, RUN, SHOW_ONLY, blocks, executable_pages, pages, run_page

#: sections whose pages must each run at least one block
MUST_RUN = ("getting-started", "guides")


@pytest.mark.parametrize("page", executable_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_snippets_run(page, tmp_path, monkeypatch):
    from peft_core import plugins

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = {info.name for info in plugins.plugin_infos()}
    modules = set(sys.modules)
    try:
        run_page(page)
    finally:
        for info in plugins.plugin_infos():
            if info.name not in before:
                plugins.unregister_plugin(info.name)
        for name in set(sys.modules) - modules:  # packages a page wrote and imported (the tutorial's plugin)
            if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
                del sys.modules[name]


def test_tutorial_and_guides_have_executed_code():
    sections = {p.relative_to(DOCS).parts[0] for p in pages() if len(p.relative_to(DOCS).parts) > 1}
    assert set(MUST_RUN) <= sections
    for page in pages():
        if page.relative_to(DOCS).parts[0] not in MUST_RUN:
            continue
        langs = [b.lang for b in blocks(page)]
        assert RUN in langs, f"{page.relative_to(DOCS)} has no executed ```python block"
        if page.relative_to(DOCS).parts[0] == "getting-started":
            assert SHOW_ONLY not in langs, f"{page.relative_to(DOCS)}: getting-started code must all run"


def test_extractor_keeps_line_numbers_and_indentation(tmp_path):
    md = tmp_path / "page.md"
    md.write_text("# t\n\n```python\nx = 1\n```\n\n=== \"tab\"\n\n    ```python\n    y = x + 1\n    ```\n\n```py\nnope\n```\n"
                  '\n```toml title="pkg/pyproject.toml"\n[project]\n```\n')
    found = blocks(md, root=tmp_path)
    assert [(b.lang, b.line, b.code, b.file) for b in found] == [
        ("python", 4, "x = 1\n", None), ("python", 10, "y = x + 1\n", None), ("py", 14, "nope\n", None),
        ("toml", 18, "[project]\n", "pkg/pyproject.toml")]

