"""Answers sent before the body was read, against a server that behaves as hypercorn 0.18 does:
the request's chunks go into a bounded queue, and ending the response means queueing
``http.disconnect`` behind them (and, with the body unread, closing the connection).

The real-TCP side of this is in tests/e2e/test_hostile_clients.py; here the server is a few
lines, so that the wedge itself is visible and deterministic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.refusals import DRAIN_BYTES, UnreadBodyMiddleware
from gateway.upload_pace import Pace

CHUNK = 64 * 1024
PACE = Pace(window_s=1.0, min_rate=1024)


pytestmark = pytest.mark.anyio


async def refuse_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers 404 without reading the body, as the model lookup does."""
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b'{"error": {}}'})


class FakeServer:
    """A bounded receive queue fed with the body, and a send whose last message queues
    ``http.disconnect``: the shape of hypercorn's HTTP/1.1 stream."""

    def __init__(self, body_bytes: int, declared: bool = True) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(10)
        self.body_bytes = body_bytes
        self.declared = declared
        self.sent: list[Message] = []
        self.fed = 0
        self.fed_when_ended = -1
        self.read_everything = False

    def scope(self) -> dict[str, Any]:
        headers = [(b"content-type", b"multipart/form-data; boundary=x")]
        if self.declared:
            headers.append((b"content-length", str(self.body_bytes).encode()))
        else:
            headers.append((b"transfer-encoding", b"chunked"))
        return {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}

    async def feed(self) -> None:
        left = self.body_bytes
        while left > 0:
            size = min(CHUNK, left)
            left -= size
            self.fed += size
            await self.queue.put({"type": "http.request", "body": b"\0" * size, "more_body": True})
        await self.queue.put({"type": "http.request", "body": b"", "more_body": False})
        self.read_everything = True

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.fed_when_ended = self.fed
            await self.queue.put({"type": "http.disconnect"})

    async def run(self, app: Any) -> None:
        feeder = asyncio.ensure_future(self.feed())
        try:
            await asyncio.wait_for(app(self.scope(), self.queue.get, self.send), 2)
        finally:
            feeder.cancel()
            await asyncio.wait({feeder})

    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])


async def test_without_the_middleware_the_early_answer_wedges() -> None:
    """The bug as it was: the app's last send never returns."""
    server = FakeServer(5 * 1024 * 1024)
    with pytest.raises(TimeoutError):
        await server.run(refuse_at_once)


async def test_a_small_remainder_is_drained_and_the_connection_kept() -> None:
    server = FakeServer(5 * 1024 * 1024)
    await server.run(UnreadBodyMiddleware(refuse_at_once, PACE))
    assert server.read_everything
    assert b"connection" not in server.headers()
    body = b"".join(m.get("body", b"") for m in server.sent if m["type"] == "http.response.body")
    assert body == b'{"error": {}}'


@pytest.mark.parametrize(
    ("size", "declared"),
    [(DRAIN_BYTES + CHUNK, True), (CHUNK * 64, False)],
    ids=["large", "chunked"],
)
async def test_a_large_or_undeclared_remainder_closes_the_connection(
    size: int, declared: bool
) -> None:
    server = FakeServer(size, declared=declared)
    await server.run(UnreadBodyMiddleware(refuse_at_once, PACE))
    assert server.headers()[b"connection"] == b"close"
    # Ended without waiting for the body: a real server then closes the connection.
    assert 0 <= server.fed_when_ended < size
