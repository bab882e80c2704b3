"""The bounded thread pool for CPU work (decoding, preprocessing, contours).

The event loop only does I/O: anything that holds the CPU for more than a moment goes through
:meth:`CpuPool.run`, so ``/ping`` and health checks answer while a long 3D request runs. The pool
is bounded so that many requests share a fixed number of threads instead of oversubscribing the
machine. numpy, scipy, pydicom's codecs and ONNX release the GIL for their heavy loops, so
threads give real parallelism here without copying arrays between processes.

Each app owns one pool, made and closed by its lifespan (``CPU_WORKERS`` threads) and handed to
what needs it: the catalog gives it to every pipeline in its :class:`PipelineBinding`, the
invocation route uses it for the response. Two apps in one process (tests, a benchmark) never
resize or close each other's pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class CpuPool:
    """``workers`` threads; :meth:`close` (or leaving a ``with`` block) waits for running calls."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-cpu")

    async def run(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """Run ``fn(*args)`` on the pool and await its result.

        The caller's context variables (the request id of the log lines) travel with the call.
        Cancelling the awaiting task does not interrupt a call already running: its result is
        dropped when it finishes.
        """
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Wait for running calls to finish, drop queued ones and release the threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> CpuPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
