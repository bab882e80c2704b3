"""Every error a gateway answers in the tests is one its route declares.

The declarations (``raises=`` beside each handler in :mod:`gateway.routes`) are what
``/openapi.json`` documents. The tests hold them to what the code does by watching every answer
they provoke: the in-process apps' through the request middleware (``tests/gateway/conftest.py``),
the end-to-end gateways' through their JSON access lines (``tests/e2e/conftest.py``). A route
that answers a code its declaration lacks fails the test, or the module, that provoked it. The
router's own ``method_not_allowed`` belongs to no route.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from gateway.errors import MethodNotAllowed
from gateway.routes import ENDPOINTS

Answer = tuple[str, str, str]
"""(method, route template, error code)."""

DECLARED = {(e.method, e.path): {cls.code for cls in e.errors} for e in ENDPOINTS}


def answer(method: str, route: str, code: str | None) -> Answer | None:
    """The answer to check, or None for one that is no route's error."""
    if code is None or code == MethodNotAllowed.code:
        return None
    return ("GET" if method == "HEAD" else method, route, code)


def undeclared(answers: Iterable[Answer]) -> list[Answer]:
    """The answers whose code their route does not declare (unknown routes are not checked)."""
    return sorted(
        {
            (method, route, code)
            for method, route, code in answers
            if (method, route) in DECLARED and code not in DECLARED[method, route]
        }
    )


def answers_in_log(log: Path) -> list[Answer]:
    """The errors of a gateway's JSON access lines (``LOG_FORMAT=json``)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or "route" not in entry:
            continue
        checked = answer(str(entry.get("method")), str(entry["route"]), entry.get("error_code"))
        if checked is not None:
            found.append(checked)
    return found


MESSAGE = (
    "routes answered error codes their raises= do not declare (so /openapi.json does not "
    "document them)"
)
