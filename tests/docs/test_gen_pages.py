"""The page generator (docs/gen_pages.py) picks up a newly installed plugin with no docs edit.

A toy plugin — a method with an undeclared capability and documented config fields, plus a
hook spec of its own — is registered in-process; its method page, matrix row, nav entry and
hook-reference entry must all appear.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Optional

import pytest
from torch import nn

from docs_snippets import DOCS

TOY_HOOKSPECS = '''
"""Hooks the toy plugin opens for others."""

from peft_core.hookspecs import hookspec


# -- toy -----------------------------------------------------------------------


@hookspec(firstresult=True)
def peft_core_toy_extension(config):
    """Return the toy extension for ``config``, or ``None`` to leave it plain; called once per adapter."""
'''


@pytest.fixture(scope="module")
def gen_pages():
    spec = importlib.util.spec_from_file_location("docs_gen_pages", DOCS / "gen_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    from peft_core import Capability, MethodSpec, PeftConfig, hookimpl
    from peft_core.plugins import register_plugin, reload_plugins
    from peft_core.registry import LAYER_METHOD_CAPABILITIES

    (tmp_path / "toy_docs_hookspecs.py").write_text(textwrap.dedent(TOY_HOOKSPECS))
    monkeypatch.syspath_prepend(str(tmp_path))
    import toy_docs_hookspecs

    @dataclass
    class ToyScaleConfig(PeftConfig):
        """ToyScale: multiplies each output channel by a learned factor."""

        peft_type: Optional[str] = "TOYSCALE"
        init_scale: float = field(default=1.0, metadata={"help": "the factor a new adapter starts with"})
        target_modules: Optional[list] = None

    class Plugin:
        @staticmethod
        @hookimpl
        def peft_core_addhooks(plugin_manager):
            plugin_manager.add_hookspecs(toy_docs_hookspecs)

        @staticmethod
        @hookimpl
        def peft_core_register_methods(registry):
            registry.register(MethodSpec(
                name="TOYSCALE", config_class=ToyScaleConfig, prefix="toyscale_", layer_factory=lambda *a, **k: nn.Identity(),
                capabilities=LAYER_METHOD_CAPABILITIES - {Capability.MERGE},
                unsupported={Capability.MERGE: "a per-channel factor on the output is not a weight delta"},
                description="A toy method for the docs generator test.", paper="https://example.org/toyscale"))

    register_plugin(Plugin, name="toy-docs")
    try:
        yield
    finally:
        reload_plugins()  # drops the toy method and its hook spec again
        sys.modules.pop("toy_docs_hookspecs", None)


def test_new_method_gets_a_page_a_matrix_row_and_a_nav_entry(gen_pages, toy_plugin):
    from peft_core.plugins import registry

    gen_pages._method_names.cache_clear()
    try:
        page = gen_pages.render_method_page(registry().get("TOYSCALE"))
        assert page.startswith("# TOYSCALE")
        assert "multiplies each output channel" in page
        assert "no — a per-channel factor on the output is not a weight delta" in page
        assert "<code>init_scale</code>" not in page and "`init_scale`" in page
        assert "the factor a new adapter starts with" in page
        assert "https://example.org/toyscale" in page

        matrix = gen_pages.render_capabilities_matrix()
        row = next(line for line in matrix.splitlines() if line.startswith("| [TOYSCALE]"))
        assert "(toyscale.md)" in row and "—" in row

        class Config(dict):
            nav = [{"Home": "index.md"}, {"Methods": ["methods/index.md"]}]

        gen_pages.on_config(Config())
        assert "methods/toyscale.md" in Config.nav[1]["Methods"]
        assert "toy-docs" in gen_pages.render_plugin_table()
    finally:
        gen_pages._method_names.cache_clear()


def test_plugin_hookspecs_join_the_hook_reference(gen_pages, toy_plugin):
    reference = gen_pages.render_hook_reference()
    assert "::: toy_docs_hookspecs.peft_core_toy_extension" in reference
    assert "::: peft_core.hookspecs.peft_core_register_methods" in reference
    assert "### Toy hooks" in reference  # grouped by the spec module's section comments
    assert "| [`peft_core_toy_extension`](#toy_docs_hookspecs.peft_core_toy_extension) | firstresult |" in reference


def test_scaffold_files_are_shown_as_new_method_writes_them(gen_pages):
    import re

    from peft_core.conformance.scaffold import FILES

    block = gen_pages.SCAFFOLD_MARKER.sub(gen_pages.render_scaffold_file,
                                          "<!-- gen:scaffold-file gated peft_core_gated/plugin.py -->")
    assert block.startswith('```py title="peft-core-gated/peft_core_gated/plugin.py"')
    assert 'name="GATED"' in block
    assert len(gen_pages._scaffold("gated")) == len(FILES)
    with pytest.raises(KeyError, match="writes no"):
        gen_pages.SCAFFOLD_MARKER.sub(gen_pages.render_scaffold_file, "<!-- gen:scaffold-file gated nope.py -->")
    assert re.search(r"```toml", gen_pages.SCAFFOLD_MARKER.sub(
        gen_pages.render_scaffold_file, "<!-- gen:scaffold-file gated pyproject.toml -->"))
