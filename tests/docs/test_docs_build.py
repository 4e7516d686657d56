"""``mkdocs build --strict`` passes, and the generated pages follow the installed plugins."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _ids(html: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', html))


def test_strict_build_passes(docs_build):
    assert docs_build.returncode == 0, docs_build.output[-4000:]
    assert "WARNING" not in docs_build.output, docs_build.output[-4000:]


def test_every_installed_method_has_a_page_and_a_matrix_row(docs_build):
    from peft_core.plugins import registry

    specs = list(registry())
    assert specs, "no method plugin installed; the Methods section would be empty"
    matrix = docs_build.page("methods/index.md")
    for spec in specs:
        slug = spec.name.lower().replace("_", "-")
        page = docs_build.page(f"methods/{slug}.md")
        assert spec.config_class.__name__ in page
        assert spec.prefix in page
        for capability in spec.capabilities:
            assert f"<code>{capability.value}</code>" in page
        assert f'href="{slug}/"' in matrix, f"{spec.name} missing from the capabilities matrix"
        assert f'href="methods/{slug}/"' in docs_build.page("index.md"), f"{spec.name} has no entry in the navigation"


def test_lora_page_reports_its_registry_entry(docs_build):
    from peft_core.plugins import registry

    lora = registry().get("LORA")
    page = docs_build.page("methods/lora.md")
    assert lora.paper in page
    assert lora.distribution in page
    # every LoraConfig field beyond the common ones is listed
    for field in ("r", "lora_alpha", "target_modules", "use_rslora", "modules_to_save"):
        assert f"<code>{field}</code>" in page


def test_cli_reference_lists_every_subcommand_and_option(docs_build):
    import argparse

    from peft_core.cli import build_parser

    page = docs_build.page("reference/cli.md")
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "methods" in subcommands
    for name, sub in subcommands.items():
        assert f"peft-core {name}" in page
        for action in sub._actions:
            for option in action.option_strings:
                assert option in page, f"option {option} of `peft-core {name}` missing"


def test_api_reference_documents_every_public_name(docs_build):
    import peft_core

    ids = _ids(docs_build.page("reference/api.md"))
    missing = [name for name in peft_core.__all__ if f"peft_core.{name}" not in ids]
    assert not missing, f"public names without an entry in docs/reference/api.md: {missing}"


def test_docstring_roles_become_links_not_literal_text(docs_build):
    page = docs_build.page("reference/api.md")
    assert ":class:`" not in page and ":func:`" not in page
    # a qualified role that names a documented object is a working link
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="#peft_core\.ConfigError"', page) or \
        re.search(r'href="#peft_core\.(errors\.)?ConfigError"', page)


def test_site_fetches_nothing_from_the_network():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    assert config["theme"]["font"] == "false"
    names = [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]]
    assert not {"social", "privacy", "optimize"} & set(names)
    handler = config["plugins"][names.index("mkdocstrings")]["mkdocstrings"]["handlers"]["python"]
    assert handler.get("inventories") in ([], None, "[]")


def test_built_pages_load_no_remote_assets(docs_build):
    for html in docs_build.site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not remote, f"{html.relative_to(docs_build.site)} loads {remote}"
