"""Admission in two stages: receiving bodies, then running inference, each bounded on its own.

Why two: a request's body arrives at the client's pace, and a client on a slow link (or a
slowloris one) would hold an inference slot for minutes while making no use of it. So:

1. :class:`UploadGate` bounds how many bodies are being received at once (``MAX_UPLOADS``).
   Past it the request is refused at once with 503 ``server_busy``: nothing of it has been read,
   and a client that cannot get its bytes in is better told to come back than parked.
2. :class:`InferenceQueue` hands out ``MAX_IN_FLIGHT`` slots, only to requests whose body is
   fully read and validated. The others wait in arrival order, at most ``MAX_QUEUE`` of them
   and at most ``QUEUE_TIMEOUT_S`` each: a burst of several times ``MAX_IN_FLIGHT`` is served
   in turn rather than refused; 503 with ``Retry-After`` comes only when the queue is full or
   the wait runs out, which tells a load balancer this replica is saturated.

Everything runs on one event loop, so plain counters are exact; the queue is a FIFO of futures
so that a slot freed goes to the longest waiter, and a waiter that gives up (its timeout, its
client hanging up) leaves no trace.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from gateway.errors import ServerBusy
from gateway.metrics import Metrics


class UploadGate:
    """At most ``limit`` request bodies being received at once; refuses (never waits) past it."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.count = 0
        self._gauge = metrics.uploads

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.count >= self.limit:
            raise ServerBusy(
                f"{self.limit} request bodies are already being received (MAX_UPLOADS); "
                f"retry shortly",
                details={"limit": self.limit, "stage": "upload"},
            )
        self.count += 1
        self._gauge.inc()
        try:
            yield
        finally:
            self.count -= 1
            self._gauge.dec()


class InferenceQueue:
    """``limit`` inference slots, with a bounded FIFO of requests waiting for one."""

    def __init__(self, limit: int, max_queue: int, timeout_s: float, metrics: Metrics) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.count = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._in_flight = metrics.in_flight
        self._depth = metrics.queue_depth
        self._wait = metrics.queue_wait_seconds

    @asynccontextmanager
    async def slot(self, *, patient: bool = False) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``; waits in turn for it.

        A ``patient`` waiter (a job's worker: ``JOB_WORKERS`` of them at most) waits in the same
        line but without ``QUEUE_TIMEOUT_S`` and outside ``MAX_QUEUE``: a job waits in its
        store, not at a client's expense, so it is never refused for a busy gateway.
        """
        await self._acquire(patient)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, patient: bool) -> None:
        started = time.perf_counter()
        if self.count < self.limit and not self._waiters:
            self._take(started)
            return
        if not patient and len(self._waiters) >= self.max_queue:
            raise ServerBusy(
                f"{self.limit} inference requests are running and {len(self._waiters)} are "
                f"waiting (MAX_IN_FLIGHT, MAX_QUEUE); retry shortly",
                details={"limit": self.limit, "queue": self.max_queue, "stage": "queue"},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._depth.set(len(self._waiters))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), None if patient else self.timeout_s)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended: pass it on, unused.
                self._release()
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
                self._depth.set(len(self._waiters))
            if isinstance(exc, TimeoutError):
                self._wait.observe(time.perf_counter() - started)
                raise ServerBusy(
                    f"no inference slot freed within {self.timeout_s:g} s (QUEUE_TIMEOUT_S); "
                    f"{self.limit} requests are running; retry shortly",
                    details={"limit": self.limit, "timeout_s": self.timeout_s, "stage": "queue"},
                ) from None
            raise
        self._wait.observe(time.perf_counter() - started)

    def _take(self, started: float) -> None:
        self.count += 1
        self._in_flight.inc()
        self._wait.observe(time.perf_counter() - started)

    def _release(self) -> None:
        self.count -= 1
        self._in_flight.dec()
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the longest waiters; the slot is counted as theirs at once."""
        while self.count < self.limit and self._waiters:
            waiter = self._waiters.popleft()
            self._depth.set(len(self._waiters))
            if waiter.done():
                continue
            self.count += 1
            self._in_flight.inc()
            waiter.set_result(None)
