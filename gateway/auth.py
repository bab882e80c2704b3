"""The API key check, and the audit record, of the routes that take or return patient data.

Each route says whether it is one of them where it is declared (``protected=`` of
:class:`~gateway.routes.endpoint.Endpoint`, which wraps its handler with :func:`protected`), and
a test holds the set to "every route with a body".
Probes, metrics, the model list, the docs and the viewer's static page stay open: they carry no
patient data, and an orchestrator's liveness probe must never need a secret.

With no key configured every request passes and is audited as key ``-``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import Unauthorized
from gateway.service import service_of

Handler = Callable[[Request], Awaitable[Response]]
AUDIT = "audit"
"""The request state key of the audit record, which the access middleware logs."""
NO_KEY = "-"


def protected(endpoint: Handler) -> Handler:
    async def checked(request: Request) -> Response:
        record = audit(request)
        keys = service_of(request).settings.keys
        if keys:
            given = presented(request.headers)
            if given is None:
                raise Unauthorized(
                    "this route needs an API key: send it as `Authorization: Bearer <key>` or "
                    "`X-API-Key: <key>`"
                )
            key = next((key for key in keys if key.matches(given)), None)
            if key is None:
                raise Unauthorized(
                    "the API key sent (in Authorization or X-API-Key) is not one of this "
                    "gateway's keys"
                )
            record["key"] = key.id
        else:
            record["key"] = NO_KEY
        return await endpoint(request)

    checked.__name__ = getattr(endpoint, "__name__", "endpoint")
    checked.__doc__ = endpoint.__doc__
    setattr(checked, "protected", True)  # noqa: B010 - read by the route table's test
    return checked


def presented(headers: Headers) -> str | None:
    """The key of ``Authorization: Bearer`` or else ``X-API-Key``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def audit(request: Request) -> dict[str, Any]:
    """This request's audit record: the handlers add the model, the file count and the bytes."""
    record: dict[str, Any] = request.scope.setdefault("state", {}).setdefault(AUDIT, {})
    return record
