"""MkDocs hooks: the pages that follow the installed plugins, generated at build time.

* ``methods/<name>.md`` — one page per method in ``peft_core.plugins.registry()``: what it
  is, its paper, its config fields, its capabilities. A new plugin gets its page (and a
  nav entry under *Methods*) just by being installed. A hand-written page at the same path
  wins over the generated one.
* placeholders replaced inside hand-written pages:

  * ``<!-- gen:capabilities-matrix -->`` — every method × every capability;
  * ``<!-- gen:plugins -->`` — every loaded plugin, with or without methods;
  * ``<!-- gen:hook-reference -->`` — mkdocstrings blocks for every hookspec the plugin
    manager knows, the core's and those plugins add through ``peft_core_addhooks``;
  * ``<!-- gen:cli-reference -->`` — the help of every ``peft-core`` subcommand, from
    ``peft_core.cli.build_parser()``;
  * ``<!-- gen:scaffold-file NAME PATH -->`` — a file exactly as ``peft-core new-method NAME``
    writes it (the plugin tutorial shows the scaffold this way, so it cannot drift).

Plugin loading is strict here (``PEFT_CORE_STRICT_PLUGINS=1``): a plugin that fails to
load fails the build instead of silently losing its page.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import logging
import os
import re
import sys
from functools import cache
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).parent))
from griffe_roles import convert_roles  # noqa: E402

log = logging.getLogger("mkdocs.hooks.gen_pages")

METHODS_DIR = "methods"
DOCS_DIR = Path(__file__).parent
CORE_HOOKSPECS = "peft_core.hookspecs"

#: what each capability means, for the tables; a capability missing here shows its value only
CAPABILITY_MEANING = {
    "merge": "merge into / unmerge from the base weights, `merge_and_unload`",
    "unload": "`unload()` removes the adapter layers and returns the base model",
    "disable": "`disable_adapter()` gives exactly the base model's output",
    "multi_adapter": "several named adapters on one model",
    "multi_active": "several adapters active at once",
    "mixed_batch": "`adapter_names=[...]` routes each row of a batch to its adapter",
    "identity_at_init": "a freshly created adapter leaves the outputs unchanged",
    "weighted_combine": "`add_weighted_adapter` can combine adapters of this method",
    "hotswap": "`hotswap_adapter` replaces the weights of a loaded adapter in place",
    "mixed_methods": "can share a model with adapters of other methods",
    "quantized_base": "adapts quantized base layers (bitsandbytes, …) through the weight hooks",
}


# -- data from the installed plugins ---------------------------------------------------------


def _load_plugins() -> Any:
    os.environ.setdefault("PEFT_CORE_STRICT_PLUGINS", "1")
    from peft_core import plugins

    return plugins


def slug(method_name: str) -> str:
    return method_name.lower().replace("_", "-")


def method_page(method_name: str) -> str:
    return f"{METHODS_DIR}/{slug(method_name)}.md"


def _code(text: Any) -> str:
    """Inline code safe inside a Markdown table cell."""
    return "<code>" + html.escape(str(text)).replace("|", "&#124;") + "</code>"


def _cell(text: str) -> str:
    return text.replace("|", "&#124;").replace("\n", " ")


def _capabilities() -> list[Any]:
    from peft_core.registry import Capability

    return list(Capability)


def _distribution_version(dist: str | None) -> str | None:
    if not dist:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _readme(dist: str | None) -> str:
    """The long description (README) of a plugin's distribution, headings demoted below H2."""
    if not dist:
        return ""
    try:
        meta = metadata.metadata(dist)
    except metadata.PackageNotFoundError:
        return ""
    body = meta.get_payload() or meta.get("Description") or ""  # type: ignore[attr-defined]
    lines = body.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]  # the page has its own title
    out, fence = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,4} ", line):
            line = "##" + line
        out.append(line)
    return "\n".join(out).strip()


def _config_fields(spec: Any) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, help)`` of the fields a method's config adds to ``PeftConfig``."""
    from peft_core.config import PeftConfig

    common = {f.name for f in dataclasses.fields(PeftConfig)}
    rows = []
    for f in dataclasses.fields(spec.config_class):
        if f.name in common or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "required"
        hint = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append((f.name, str(hint).replace("typing.", ""), default, str(f.metadata.get("help", ""))))
    return rows


def _plugin_infos() -> dict[str, Any]:
    return {p.name: p for p in _load_plugins().plugin_infos()}


def render_method_page(spec: Any) -> str:
    infos = _plugin_infos()
    info = infos.get(spec.plugin_name)
    version = (info.version if info else None) or _distribution_version(spec.distribution)
    cls = spec.config_class
    kinds = getattr(cls, "supported_layer_kinds", None)
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature docstring
        doc = ""
    lines = [f"# {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    if doc:
        lines += [convert_roles(doc), ""]
    lines += ["| | |", "|---|---|"]
    lines.append(f"| `peft_type` (on disk) | {_code(spec.name)} |")
    lines.append(f"| config class | {_code(cls.__name__)} — `from peft_core import {cls.__name__}` |")
    dist = spec.distribution or "-"
    lines.append(f"| distribution | {_code(dist)}" + (f" {version}" if version else "") + (
        f" — `pip install {spec.distribution}`" if spec.distribution else "") + " |")
    lines.append(f"| plugin (entry point) | {_code(spec.plugin_name)} |")
    lines.append(f"| state-dict prefix | {_code(spec.prefix)} |")
    if kinds:
        lines.append(f"| adapts layer kinds | {', '.join(kinds)} |")
    if spec.paper:
        lines.append(f"| paper | <{spec.paper}> |")
    if (DOCS_DIR / "guides" / f"{slug(spec.name)}.md").is_file():
        lines.append(f"| guide | [{spec.name} guide](../guides/{slug(spec.name)}.md) |")
    lines += ["", "## Capabilities", "",
              "Operations the core runs for this method; an operation whose capability is not declared "
              "raises `UnsupportedOperation` with the reason below. The conformance suite checks both.", "",
              "| capability | supported | meaning |", "|---|---|---|"]
    for cap in _capabilities():
        if spec.supports(cap):
            mark = "yes"
        else:
            reason = spec.unsupported.get(cap)
            mark = "no" + (f" — {_cell(reason)}" if reason else "")
        lines.append(f"| `{cap.value}` | {mark} | {CAPABILITY_MEANING.get(cap.value, '')} |")
    rows = _config_fields(spec)
    lines += ["", "## Config fields", "",
              f"`{cls.__name__}` has the fields every config has (`task_type`, `base_model_name_or_path`, "
              "`inference_mode`, … — see [PeftConfig](../reference/api.md#peft_core.PeftConfig)) and these:", ""]
    if rows:
        has_help = any(r[3] for r in rows)
        lines += ["| field | type | default" + (" | meaning |" if has_help else " |"),
                  "|---|---|---" + ("|---|" if has_help else "|")]
        for name, hint, default, help_text in rows:
            lines.append(f"| `{name}` | {_code(hint)} | {_code(default)}" + (f" | {_cell(help_text)} |" if has_help else " |"))
    else:
        lines.append("(none)")
    readme = _readme(spec.distribution)
    if readme:
        lines += ["", f"## From the `{spec.distribution}` README", "", readme]
    return "\n".join(lines) + "\n"


def render_capabilities_matrix() -> str:
    plugins = _load_plugins()
    caps = _capabilities()
    specs = list(plugins.registry())
    if not specs:
        return "No method plugin is installed."
    head = "| method | " + " | ".join(f"`{c.value}`" for c in caps) + " |"
    rule = "|---|" + "---|" * len(caps)
    rows = []
    for spec in specs:
        cells = ["yes" if spec.supports(c) else "—" for c in caps]
        rows.append(f"| [{spec.name}]({slug(spec.name)}.md) | " + " | ".join(cells) + " |")
    legend = ["", "| capability | meaning |", "|---|---|"]
    legend += [f"| `{c.value}` | {CAPABILITY_MEANING.get(c.value, '')} |" for c in caps]
    return "\n".join([head, rule, *rows, *legend])


def render_plugin_table() -> str:
    plugins = _load_plugins()
    methods: dict[str, list[str]] = {}
    for spec in plugins.registry():
        methods.setdefault(spec.plugin_name, []).append(spec.name)
    lines = ["| plugin | distribution | methods | status |", "|---|---|---|---|"]
    for info in plugins.plugin_infos():
        names = ", ".join(f"[{m}]({slug(m)}.md)" for m in methods.get(info.name, [])) or "— (hooks only)"
        status = f"failed: {_cell(info.error)}" if info.error else "loaded"
        lines.append(f"| `{info.name}` | {_code(info.distribution or '-')} | {names} | {status} |")
    return "\n".join(lines)


# -- hook reference ------------------------------------------------------------------------


def hookspec_functions() -> dict[str, list[Any]]:
    """Every hookspec function the plugin manager knows, by defining module, in source order."""
    pm = _load_plugins().plugin_manager()
    by_module: dict[str, list[Any]] = {}
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        spec = getattr(caller, "spec", None)
        if spec is None:
            continue
        by_module.setdefault(spec.function.__module__, []).append(spec.function)
    for funcs in by_module.values():
        funcs.sort(key=lambda f: f.__code__.co_firstlineno)
    return dict(sorted(by_module.items(), key=lambda kv: (kv[0] != CORE_HOOKSPECS, kv[0])))


def _sections(module_name: str) -> list[tuple[int, str]]:
    """``(line, title)`` of the ``# -- title ----`` comments that group a hookspec module."""
    source = inspect.getsource(import_module(module_name))
    return [(i + 1, m.group(1).strip()) for i, line in enumerate(source.splitlines())
            if (m := re.match(r"#\s*--\s*(.+?)\s*-{3,}\s*$", line))]


def _hook_block(path: str, level: int) -> str:
    return f"::: {path}\n    options:\n      heading_level: {level}\n      show_root_full_path: false\n"


def _kind(func: Any) -> str:
    pm = _load_plugins().plugin_manager()
    opts = getattr(pm.hook, func.__name__).spec.opts
    kinds = [k for k in ("firstresult", "historic") if opts.get(k)]
    return ", ".join(kinds) or "all results"


def render_hook_reference() -> str:
    out = []
    for module_name, funcs in hookspec_functions().items():
        module = import_module(module_name)
        if module_name == CORE_HOOKSPECS:
            out += ["## Core hooks", "", f"Declared in `{module_name}`.", ""]
        else:
            dist = _dist_of_module(module_name)
            out += [f"## Hooks added by `{dist or module_name.split('.')[0]}`", "",
                    f"Declared in `{module_name}` and added through `peft_core_addhooks`.", ""]
            doc = inspect.getdoc(module)
            if doc:
                out += [convert_roles(doc), ""]
        out += ["| hook | kind |", "|---|---|"]
        out += [f"| [`{f.__name__}`](#{module_name}.{f.__name__}) | {_kind(f)} |" for f in funcs]
        out.append("")
        sections = _sections(module_name)
        current = None
        for func in funcs:
            line = func.__code__.co_firstlineno
            title = next((t for ln, t in reversed(sections) if ln < line), None)
            if title is not None and title != current:
                out += [f"### {title.capitalize()} hooks", ""]
                current = title
            out.append(_hook_block(f"{module_name}.{func.__name__}", 4 if current else 3))
        # public helper types declared next to the specs (a variant protocol, …)
        extras = [n for n, obj in vars(module).items()
                  if inspect.isclass(obj) and obj.__module__ == module_name and not n.startswith("_")]
        if extras:
            out += ["### Types declared with these hooks", ""]
            out += [_hook_block(f"{module_name}.{n}", 4) for n in extras]
    types = _types_named_in_hooks()
    if types:
        out += ["## Types the hooks take or return", "",
                "Classes the hook descriptions above refer to, other than errors.", ""]
        out += [_hook_block(path, 3) for path in types]
    return "\n".join(out)


def _types_named_in_hooks() -> list[str]:
    """``module.Class`` paths that hookspec docstrings reference with ``:class:`` roles."""
    from griffe_roles import ROLE

    found: dict[str, None] = {}
    for module_name, funcs in hookspec_functions().items():
        for func in funcs:
            for match in ROLE.finditer(inspect.getdoc(func) or ""):
                path = match["target"].lstrip("~").rstrip("()")
                mod, _, name = path.rpartition(".")
                try:
                    obj = getattr(import_module(mod), name)
                except (ImportError, AttributeError, ValueError):
                    continue
                if inspect.isclass(obj) and not issubclass(obj, BaseException) and obj.__module__ == mod:
                    found[path] = None
    return list(found)


def _dist_of_module(module_name: str) -> str | None:
    top = module_name.split(".")[0]
    dists = metadata.packages_distributions().get(top)
    return dists[0] if dists else None


# -- CLI reference ---------------------------------------------------------------------------


def render_cli_reference() -> str:
    import argparse

    os.environ["COLUMNS"] = "100"
    os.environ["NO_COLOR"] = "1"
    from peft_core.cli import build_parser

    parser = build_parser()
    out = ["## `peft-core`", "", "```text", parser.format_help().rstrip(), "```", ""]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subparsers:
        for name, sub in sorted(action.choices.items()):
            out += [f"## `peft-core {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


# -- mkdocs hooks -----------------------------------------------------------------------------


@cache
def _method_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in _load_plugins().registry())


def on_config(config: Any, **kwargs: Any) -> Any:
    """Add a nav entry under *Methods* for every installed method."""
    pages = [method_page(name) for name in _method_names()]
    for entry in config.nav or []:
        if isinstance(entry, dict) and "Methods" in entry:
            section = entry["Methods"]
            section[:] = [p for p in section if p not in pages] + pages
            break
    return config


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    registry = _load_plugins().registry()
    for name in _method_names():
        path = method_page(name)
        if files.get_file_from_path(path) is None:
            files.append(File.generated(config, path, content=render_method_page(registry.get(name))))
    return files


PLACEHOLDERS = {
    "<!-- gen:capabilities-matrix -->": render_capabilities_matrix,
    "<!-- gen:plugins -->": render_plugin_table,
    "<!-- gen:hook-reference -->": render_hook_reference,
    "<!-- gen:cli-reference -->": render_cli_reference,
}


SCAFFOLD_MARKER = re.compile(r"<!-- gen:scaffold-file (?P<name>\w+) (?P<path>\S+) -->")


@cache
def _scaffold(name: str) -> dict[str, str]:
    """The files ``peft-core new-method NAME`` writes, relative to the package root."""
    import tempfile

    from peft_core.conformance.scaffold import write_plugin

    with tempfile.TemporaryDirectory() as tmp:
        root = write_plugin(name, Path(tmp))
        return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
                for p in sorted(root.rglob("*")) if p.is_file()}


def render_scaffold_file(match: re.Match[str]) -> str:
    """A generated file of the plugin scaffold as a fenced block titled with its path.

    The fence language is ``text``-like for non-Python files; Python files use ``py`` so the
    doc-snippet test does not run them (``new-method`` writes them when the tutorial runs).
    """
    name, path = match["name"], match["path"]
    files = _scaffold(name)
    if path not in files:
        raise KeyError(f"the scaffold for {name!r} writes no {path!r}; it writes {sorted(files)}")
    lang = {"py": "py", "toml": "toml", "md": "markdown"}.get(path.rsplit(".", 1)[-1], "text")
    dist = name.replace("_", "-")
    fence = "````" if "```" in files[path] else "```"
    return f'{fence}{lang} title="peft-core-{dist}/{path}"\n{files[path].rstrip()}\n{fence}'


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    for marker, render in PLACEHOLDERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return SCAFFOLD_MARKER.sub(render_scaffold_file, markdown)
