"""Keep a local Triton alive: when the server dies, clean up after it and start it again.

A ``tritonserver`` killed by the OOM killer, a segfault or a stray ``kill -9`` otherwise stays a
zombie (nobody waits on it), leaves its backend stubs running (a few hundred MiB each), and
leaves the gateway answering 503 until a person restarts everything. The supervisor is the one
waiter: a thread blocked on the server's exit, which then SIGKILLs what is left of its process
group at once, and restarts it on the same ports (so the gateway's gRPC channel reconnects by
itself) with a growing delay between failed attempts. A server that stayed up for
:data:`STABLE_S` resets the delay.

The supervisor's thread starts the new server, so the server is bound to that thread's life
(``PR_SET_PDEATHSIG``) just as the first one is bound to the main thread: if the whole process
is killed, no server outlives it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from triton_local.errors import TritonStartError
from triton_local.launcher import LocalTriton

logger = logging.getLogger(__name__)

BACKOFF_S: Sequence[float] = (0.5, 1, 2, 4, 8, 15, 30)
"""Delays before each restart attempt in a row; the last one repeats."""
STABLE_S = 60.0
"""A server that ran this long counts as healthy: the next failure starts the delays over."""


class TritonSupervisor:
    """Start ``triton``, then restart it whenever it exits until :meth:`stop`."""

    def __init__(self, triton: LocalTriton, *, backoff_s: Sequence[float] = BACKOFF_S) -> None:
        if not backoff_s:
            raise ValueError("backoff_s needs at least one delay")
        self.triton = triton
        self.restarts = 0
        self._backoff_s = tuple(backoff_s)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TritonSupervisor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> TritonSupervisor:
        """Start the server (raising TritonStartError as :meth:`LocalTriton.start` does), then
        watch it."""
        self.triton.start()
        self._thread = threading.Thread(target=self._watch, name="triton-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and stop the server with its stubs, whatever state it is in."""
        self._stopping.set()
        with self._lock:
            self.triton.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _watch(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                code = self.triton.wait()
            except RuntimeError:  # stopped between two checks
                return
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_S:
                attempt = 0
            logger.error(
                "tritonserver exited with status %s; killing its stubs and restarting it (log: %s)",
                code,
                self.triton.log_path,
            )
            with self._lock:
                self.triton.reap()
            while not self._stopping.is_set():
                delay = self._backoff_s[min(attempt, len(self._backoff_s) - 1)]
                attempt += 1
                if self._stopping.wait(delay):
                    return
                with self._lock:
                    if self._stopping.is_set():
                        return
                    try:
                        self.triton.restart(from_thread=True)
                    except TritonStartError as exc:
                        logger.error("restarting Triton failed (attempt %d): %s", attempt, exc)
                        continue
                self.restarts += 1
                logger.warning(
                    "Triton restarted (restart %d) on grpc %s", self.restarts, self.triton.grpc_url
                )
                break
