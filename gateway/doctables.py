"""The tables the docs carry that are generated from declarations: rewrite them, or check them.

``docs/configuration.md`` carries the settings table (:func:`gateway.settings.settings_markdown`)
and ``docs/errors.md`` the error table (:func:`gateway.openapi.errors_markdown`), each between
a ``<!-- generated: NAME -->`` line and an ``<!-- end: NAME -->`` line. ``make docs`` rewrites
them; the tests fail when one has drifted from its declarations.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.openapi import errors_markdown
from gateway.settings import settings_markdown

ROOT = Path(__file__).resolve().parent.parent
TABLES: dict[str, tuple[Path, Callable[[], str]]] = {
    "settings": (ROOT / "docs" / "configuration.md", settings_markdown),
    "errors": (ROOT / "docs" / "errors.md", errors_markdown),
}


def _span(name: str, text: str) -> tuple[int, int]:
    """Where the table ``name`` stands in ``text``; ValueError when its markers are missing."""
    found = re.search(
        rf"<!-- generated: {name} -->\n(.*?)<!-- end: {name} -->", text, flags=re.DOTALL
    )
    if found is None:
        raise ValueError(f"no '<!-- generated: {name} -->' ... '<!-- end: {name} -->' block")
    return found.span(1)


def current(name: str) -> str:
    """The table as its file has it now."""
    path, _ = TABLES[name]
    text = path.read_text(encoding="utf-8")
    start, end = _span(name, text)
    return text[start:end]


def rewrite() -> list[str]:
    """Write every generated table into its file; the names of the tables that changed."""
    changed = []
    for name, (path, generate) in TABLES.items():
        text = path.read_text(encoding="utf-8")
        start, end = _span(name, text)
        table = generate()
        if text[start:end] != table:
            path.write_text(text[:start] + table + text[end:], encoding="utf-8")
            changed.append(name)
    return changed


if __name__ == "__main__":
    print("rewrote: " + (", ".join(rewrite()) or "nothing"), file=sys.stderr)
