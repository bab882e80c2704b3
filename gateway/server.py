"""The HTTP server: hypercorn, configured for the gateway, stopped by SIGINT or SIGTERM.

One thing hypercorn offers no setting for: a request that h11 cannot parse (a ``Content-Length``
that is not a number, a broken request line) never reaches the app, and hypercorn answers it
with an empty 400. :class:`JSONErrorH11Protocol` answers it in the gateway's error format
instead, with the same code a request caught by the app's own header checks gets, and logs it:
every answer the service gives is JSON and has an access-log line. Hypercorn picks its HTTP/1.1
protocol class from ``hypercorn.protocol``, so that is where the subclass is installed, once,
by :func:`serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from itertools import chain
from typing import cast

import h11
import hypercorn.protocol
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import ASGIFramework

from gateway.app import create_app
from gateway.errors import MalformedRequest
from gateway.settings import Settings

GRACEFUL_TIMEOUT_S = 10.0
"""On SIGINT/SIGTERM, requests in progress get this long to finish."""
KEEP_ALIVE_TIMEOUT_S = 75.0
"""How long an idle keep-alive connection stays open. Longer than the clients' own idle expiry
(httpx: 5 s, the same as hypercorn's default), so that the client, not the server, closes an
idle connection: a server closing at the very moment a client reuses the connection drops that
client's request, which the client sees as a broken connection with no answer."""

access_logger = logging.getLogger("gateway.access")


class JSONErrorH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, with its parse-error answers in the gateway's format."""

    async def _send_error_response(self, status_code: int) -> None:
        error = MalformedRequest(
            "the request is not valid HTTP/1.1: a malformed request line or header, e.g. a "
            "Content-Length that is not a number; let an HTTP library build the request"
        )
        body = json.dumps(error.body(None)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self._send_h11_event(
            h11.Response(
                status_code=status_code,
                headers=list(chain(headers, self.config.response_headers("h11"))),
            )
        )
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
        access_logger.info(
            "unparsable request %s",
            status_code,
            extra={"status": status_code, "error_code": error.code, "route": "unparsed"},
        )


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then let requests in progress finish."""
    setattr(hypercorn.protocol, "H11Protocol", JSONErrorH11Protocol)  # noqa: B010
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None  # the gateway's own access log carries the request id
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app = cast(ASGIFramework, create_app(settings))
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)
