"""The bounded thread pool for CPU work (decoding, preprocessing, contours).

The event loop only does I/O: anything that holds the CPU for more than a moment goes through
:func:`run_cpu`, so ``/ping`` and health checks answer while a long 3D request runs. The pool is
bounded so that many requests share a fixed number of threads instead of oversubscribing the
machine. numpy, scipy, pydicom's codecs and ONNX release the GIL for their heavy loops, so
threads give real parallelism here without copying arrays between processes.

The app's lifespan calls :func:`configure` at start and :func:`shutdown` at stop. Code that runs
outside an app (a pipeline under test, a benchmark) gets a pool of ``os.cpu_count()`` threads
on first use.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_workers = os.cpu_count() or 1


def configure(workers: int) -> None:
    """Size the pool; a pool of another size is replaced (its queued work still finishes)."""
    global _pool, _workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    with _lock:
        if _pool is not None and workers != _workers:
            _pool.shutdown(wait=False)
            _pool = None
        _workers = workers


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_workers, thread_name_prefix="gateway-cpu")
        return _pool


async def run_cpu(fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """Run ``fn(*args)`` on the pool and await its result.

    The caller's context variables (the request id of the log lines) travel with the call.
    Cancelling the awaiting task does not interrupt a call already running: its result is
    dropped when it finishes.
    """
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)


def shutdown() -> None:
    """Wait for running calls to finish and release the threads; a later call makes a new pool."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
