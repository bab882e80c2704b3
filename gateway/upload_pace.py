"""Receiving a request body at a pace the gateway can afford, from the ASGI ``receive`` channel.

A client that opens a request and then sends nothing, or a byte now and then (slowloris), holds
an upload slot, a folder and a socket for as long as it likes unless the reader sets the pace.
The rule here is one window, ``UPLOAD_IDLE_TIMEOUT_S`` long, applied over and over: in each
window at least ``UPLOAD_MIN_RATE`` bytes per second of it must arrive. A stalled upload fails
when its first empty window ends; a trickle fails at the end of the first window it does not
fill. Either way the answer is 408 ``upload_timeout`` and the connection is closed (what was not
read is not worth waiting for), so a slow client costs one window of an upload slot, not the
length of its upload. Honest clients on slow links are protected by the smallness of the
default rate (16 KiB/s, a 500 MiB series in under nine hours).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from gateway.errors import UploadTimeout


@dataclass(frozen=True)
class Pace:
    window_s: float
    min_rate: int
    """Bytes per second, averaged over each window."""


async def receive_body(receive: Receive, pace: Pace) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive; UploadTimeout when a window falls short of the pace,
    ClientDisconnect when the client goes away first.

    A wait for ``receive()`` is cancelled when its window ends: ASGI servers' ``receive`` is
    cancel-safe (hypercorn's is a queue's ``get``), so no message is lost by that.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    window_end = started + pace.window_s
    window_bytes = 0
    total = 0
    while True:
        try:
            async with asyncio.timeout_at(window_end):
                message = await receive()
        except TimeoutError:
            message = None
        now = loop.time()
        if message is not None:
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            window_bytes += len(chunk)
            total += len(chunk)
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
        if now >= window_end:
            needed = pace.min_rate * pace.window_s
            if window_bytes < needed:
                raise _too_slow(pace, total, now - started, window_bytes)
            window_end = now + pace.window_s
            window_bytes = 0


def _too_slow(pace: Pace, total: int, seconds: float, window_bytes: int) -> UploadTimeout:
    if window_bytes == 0:
        what = f"no body bytes arrived for {pace.window_s:g} s (UPLOAD_IDLE_TIMEOUT_S)"
    else:
        what = (
            f"{window_bytes} body bytes arrived in the last {pace.window_s:g} s, below "
            f"{pace.min_rate} bytes per second (UPLOAD_MIN_RATE)"
        )
    return UploadTimeout(
        f"the upload was too slow: {what}; {total} bytes were received in {seconds:.1f} s",
        details={
            "received_bytes": total,
            "window_s": pace.window_s,
            "min_rate": pace.min_rate,
        },
    )
