"""Every error an in-process gateway answers in these tests is one its route declares
(:mod:`tests.declared_errors`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.routing import Route
from starlette.types import Scope

from gateway.app import RequestContextMiddleware
from tests.declared_errors import MESSAGE, Answer, answer, undeclared


@pytest.fixture(autouse=True)
def routes_answer_only_declared_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    answers: list[Answer] = []
    record = RequestContextMiddleware._record

    def watched(self: Any, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        if isinstance(route, Route):
            code = scope.get("state", {}).get("error_code")
            checked = answer(scope["method"], route.path, code)
            if checked is not None:
                answers.append(checked)
        record(self, scope, status, seconds)

    monkeypatch.setattr(RequestContextMiddleware, "_record", watched)
    yield
    assert not undeclared(answers), f"{MESSAGE}: {undeclared(answers)}"
