"""The tables the docs carry that are generated from declarations: rewrite them, or check them.

``docs/configuration.md`` carries the settings table (:func:`gateway.settings.settings_markdown`)
and ``docs/errors.md`` the error table (:func:`gateway.openapi.errors_markdown`), each between
a ``<!-- generated: NAME -->`` line and an ``<!-- end: NAME -->`` line. ``make docs`` rewrites
them (``python -m gateway.doctables [ROOT]``, the repository's root, by default the working
directory); the tests fail when one has drifted from its declarations.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.openapi import errors_markdown
from gateway.settings import settings_markdown

TABLES: dict[str, tuple[Path, Callable[[], str]]] = {
    "settings": (Path("docs") / "configuration.md", settings_markdown),
    "errors": (Path("docs") / "errors.md", errors_markdown),
}
"""Each table's file, relative to the repository's root (the working directory by default)."""


def _span(name: str, text: str) -> tuple[int, int]:
    """Where the table ``name`` stands in ``text``; ValueError when its markers are missing."""
    found = re.search(
        rf"<!-- generated: {name} -->\n(.*?)<!-- end: {name} -->", text, flags=re.DOTALL
    )
    if found is None:
        raise ValueError(f"no '<!-- generated: {name} -->' ... '<!-- end: {name} -->' block")
    return found.span(1)


def current(name: str, root: Path = Path()) -> str:
    """The table as its file under ``root`` has it now."""
    path, _ = TABLES[name]
    text = (root / path).read_text(encoding="utf-8")
    start, end = _span(name, text)
    return text[start:end]


def rewrite(root: Path = Path()) -> list[str]:
    """Write every generated table into its file under ``root``; the names of those changed."""
    changed = []
    for name, (relative, generate) in TABLES.items():
        path = root / relative
        text = path.read_text(encoding="utf-8")
        start, end = _span(name, text)
        table = generate()
        if text[start:end] != table:
            path.write_text(text[:start] + table + text[end:], encoding="utf-8")
            changed.append(name)
    return changed


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path()
    print("rewrote: " + (", ".join(rewrite(root)) or "nothing"), file=sys.stderr)
