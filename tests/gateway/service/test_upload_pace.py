"""The upload pace: a stalled body and a trickle both end in 408 at the end of a window; a body
that keeps up arrives whole; a client that leaves is a disconnect, not a timeout."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from gateway.errors import UploadTimeout
from gateway.upload_pace import Pace, receive_body

pytestmark = pytest.mark.anyio

PACE = Pace(window_s=0.2, min_rate=10_000)


async def collect(messages: list[tuple[float, Message]], pace: Pace = PACE) -> bytes:
    """The body as received from messages each sent after its delay; past the list, silence."""
    pending = list(messages)

    async def receive() -> Message:
        # Cancel-safe, as a server's receive is: a message is taken only once it is due.
        if not pending:
            await asyncio.Event().wait()
        await asyncio.sleep(pending[0][0])
        return pending.pop(0)[1]

    return b"".join([chunk async for chunk in receive_body(receive, pace)])


def chunk(data: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


async def test_a_body_that_keeps_up_arrives_whole() -> None:
    messages = [(0.01, chunk(b"x" * 1000)) for _ in range(20)] + [(0.0, chunk(b"", more=False))]
    assert await collect(messages) == b"x" * 20_000


async def test_a_stalled_body_is_cut_off_after_one_window() -> None:
    with pytest.raises(UploadTimeout, match=r"no body bytes arrived for 0\.2 s") as raised:
        await collect([(0.0, chunk(b"x" * 5000))])
    assert raised.value.status == 408 and raised.value.closes_connection


async def test_a_trickle_below_the_rate_is_cut_off() -> None:
    messages = [(0.05, chunk(b"x" * 10)) for _ in range(40)]
    with pytest.raises(UploadTimeout, match="below 10000 bytes per second"):
        await collect(messages)


async def test_a_client_that_leaves_is_a_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        await collect([(0.0, chunk(b"x")), (0.0, {"type": "http.disconnect"})])
