"""Griffe extension: render the Sphinx-style roles of the core's docstrings as links.

The core's docstrings cross-reference with ``:class:`~peft_core.errors.ConfigError``` (and
``:func:``, ``:meth:``, ``:data:``…), which Markdown would print literally. This turns
each role into an *optional* autorefs link: a link where the target is documented on the
site, plain code where it is not — so a reference to an undocumented name never breaks
``mkdocs build --strict``.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj):`(?P<target>[^`]+)`")


def _link(match: re.Match[str], resolve: Any = None) -> str:
    target = match["target"].strip()
    short = target.startswith("~")
    target = target.lstrip("~").rstrip("()")
    title = target.rsplit(".", 1)[-1] if short or "." not in target else target
    if resolve is not None and "." not in target:
        target = resolve(target) or target
    ident = html.escape(target, quote=True)
    return f'<autoref identifier="{ident}" optional><code>{html.escape(title)}</code></autoref>'


def convert_roles(text: str, resolve: Any = None) -> str:
    """Replace every Sphinx role in ``text`` with an optional autorefs link.

    ``resolve(name)`` may turn an unqualified name into a full path (``None`` if unknown).
    """
    return ROLE.sub(lambda m: _link(m, resolve), text)


def _resolver(obj: Object) -> Any:
    """Look unqualified names up in the object, its parents, then its module (imports included)."""

    def resolve(name: str) -> str | None:
        scope: Any = obj
        while scope is not None:
            member = scope.members.get(name) if hasattr(scope, "members") else None
            if member is not None:
                return member.target_path if member.is_alias else member.path
            scope = scope.parent
        return None

    return resolve


class SphinxRoles(Extension):
    """Rewrite roles in every docstring before mkdocstrings parses it."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = convert_roles(obj.docstring.value, _resolver(obj))
