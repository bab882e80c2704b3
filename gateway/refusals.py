"""Answers sent before the request body was read: make sure the client gets them, and the
connection ends cleanly.

The gateway refuses some requests before reading their body (an unknown model, an over-long
``Content-Length``, a 503 from the model lookup, a stalled upload). HTTP/1.1 leaves the unread
body on the connection, and two things go wrong if nothing is done about it:

- The connection wedges. The server parks the unread chunks in the app's bounded receive
  queue; when the response ends it must also queue ``http.disconnect``, and with the queue full
  of chunks nobody reads, that wait never ends (hypercorn 0.18): the handler lives on, the
  client's next request on the connection times out, and shutdown waits for it.
- The client may never see the answer. Most clients send the whole body before reading a
  response; a server that closes with unread bytes in its socket makes the kernel reset the
  connection, and the reset can overtake the response.

So, when a response starts before the body has been received:

- if the rest of the body is declared (``Content-Length``) and at most :data:`DRAIN_BYTES`, it is
  read and discarded after the response's bytes are sent and before the response is ended, at
  the pace of :mod:`gateway.upload_pace`. The client reads its answer as usual, and the
  connection is kept alive for its next request;
- otherwise (a larger or chunked body, a stalled upload, or the drain falling short of the pace)
  the response carries ``Connection: close``, and the server closes the connection once the
  response is sent.

Either way the receive channel is kept moving while the response ends, so the server can
always hand over its ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import UploadTimeout
from gateway.upload_pace import Pace, receive_body

DRAIN_BYTES = 16 * 1024 * 1024
"""The most unread body bytes read and discarded to keep a connection alive after an answer."""

CLOSE_CONNECTION = "close_connection"
"""Key of ``scope["state"]``: set by an error that must not wait for the rest of the body."""


@dataclass
class _Body:
    declared: int | None
    """Content-Length, when given and valid."""
    complete: bool
    received: int = 0


class UnreadBodyMiddleware:
    """Pure ASGI, outermost: sees every response, including the error pages."""

    def __init__(self, app: ASGIApp, pace: Pace) -> None:
        self.app = app
        self.pace = pace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _body_of(Headers(scope=scope))

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.received += len(message.get("body", b""))
                body.complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                body.complete = True
            return message

        early = False
        drain = False

        async def guarded_send(message: Message) -> None:
            nonlocal early, drain
            if message["type"] == "http.response.start" and not body.complete:
                early = True
                drain = self._can_drain(body, scope)
                if not drain:
                    message = dict(message)
                    MutableHeaders(scope=message)["Connection"] = "close"
            if early and message["type"] == "http.response.body" and not message.get("more_body"):
                await send({**message, "more_body": True})
                if drain:
                    await self._drain(tracked_receive)
                await _end_response(send, tracked_receive)
                return
            await send(message)

        await self.app(scope, tracked_receive, guarded_send)

    def _can_drain(self, body: _Body, scope: Scope) -> bool:
        if scope.get("state", {}).get(CLOSE_CONNECTION) or body.declared is None:
            return False
        return body.declared - body.received <= DRAIN_BYTES

    async def _drain(self, receive: Receive) -> None:
        """Read the rest of the body at the upload pace; stop quietly if it falls short (the
        server then closes the connection, as for a body too large to drain)."""
        chunks = receive_body(receive, self.pace)
        try:
            async for _ in chunks:
                pass
        except (UploadTimeout, ClientDisconnect):
            pass
        finally:
            await chunks.aclose()


async def _end_response(send: Send, receive: Receive) -> None:
    """The response's last message, while reading (and dropping) what the server still hands
    the app: ending the response may make it queue ``http.disconnect`` behind unread chunks."""
    consumer = asyncio.ensure_future(_discard(receive))
    try:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        consumer.cancel()
        await asyncio.wait({consumer})


async def _discard(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _body_of(headers: Headers) -> _Body:
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    raw = headers.get("content-length")
    declared = int(raw) if raw is not None and raw.strip().isdigit() else None
    # No Content-Length and no chunked body: HTTP/1.1 says there is no body (RFC 9112, 6.3).
    return _Body(declared=declared, complete=not chunked and not declared)
