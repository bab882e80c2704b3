"""The HTTP server: hypercorn, configured for the gateway, stopped by SIGINT or SIGTERM.

What hypercorn offers no setting for (parse errors answered in JSON, connections closed as soon
as their client has gone) is adapted in :mod:`gateway.server_protocol`, installed by each
process that serves.

``WORKERS`` above 1 runs that many gateway processes on one listening socket, bound once by the
parent (so a port in use fails once, clearly) and handed to each worker; the kernel gives each
connection to one of them. Each worker is a whole gateway: its own event loop, CPU pool,
admission limits and Triton channel. Their metrics are summed: prometheus_client's
multiprocess mode, over a folder the parent makes and removes, so ``/metrics`` from any worker
shows the whole service. The parent only supervises: it restarts a worker that dies (one that
dies within :data:`STARTUP_S` of starting stops the service instead, since a crash at start is
a configuration error that a restart loop would only hide), and on SIGINT or SIGTERM it passes
the signal on and waits for the workers' graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from types import FrameType
from typing import cast

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app
from prometheus_client import multiprocess

from gateway import server_protocol
from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.metrics import MULTIPROCESS_DIR
from gateway.pipelines.catalog import Factories
from gateway.settings import Settings, SettingsError

GRACEFUL_TIMEOUT_S = 10.0
"""On SIGINT/SIGTERM, requests in progress get this long to finish."""

STARTUP_S = 10.0
"""A worker that exits sooner than this after starting stops the service rather than restart."""

logger = logging.getLogger("gateway")


def serve(settings: Settings, pipelines: Factories | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then let requests in progress finish; with ``WORKERS``
    above 1, in that many supervised processes. ``pipelines`` (objects of this process, as
    FLaVor's ``InferAPP`` gives) need ``WORKERS=1``: worker processes cannot share them."""
    if settings.workers == 1:
        server_protocol.install()
        asyncio.run(_serve(settings, None, pipelines))
        return
    if pipelines:
        raise SettingsError(
            f"WORKERS={settings.workers}: a program that hands the gateway its own pipeline "
            "objects (InferAPP) serves in one process; set WORKERS=1, or name the class in "
            "PIPELINES to serve it from several"
        )
    _Supervisor(settings).run()


def _config(settings: Settings) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None  # the gateway's own access log carries the request id
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.keep_alive_timeout = settings.keep_alive_timeout_s
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        # HTTPS on the same port, for deployments without an ingress to terminate TLS.
        config.certfile = str(settings.tls_cert_file)
        config.keyfile = str(settings.tls_key_file)
    return config


async def _serve(
    settings: Settings, sockets: Sockets | None, pipelines: Factories | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app = cast(ASGIFramework, create_app(settings, pipelines=pipelines))
    config = _config(settings)
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),
        config,
        sockets=sockets,
        shutdown_trigger=stop.wait,
    )


def _worker(settings: Settings, sockets: Sockets) -> None:
    """One worker process (spawned: nothing of the parent's state but what is passed)."""
    configure_logging(settings.log_level, settings.log_format)
    server_protocol.install()
    asyncio.run(_serve(settings, sockets))


class _Supervisor:
    """The parent of ``WORKERS`` gateway processes: starts, restarts and stops them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> None:
        sockets = _config(self.settings).create_sockets()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir:
                # Read by prometheus_client when a worker imports it: set before they start.
                os.environ[MULTIPROCESS_DIR] = metrics_dir
                try:
                    self._supervise(sockets)
                finally:
                    del os.environ[MULTIPROCESS_DIR]
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                sock.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _start(
        self, sockets: Sockets, index: int
    ) -> tuple[multiprocessing.process.BaseProcess, float]:
        process = self._context.Process(
            target=_worker, args=(self.settings, sockets), name=f"gateway-worker-{index}"
        )
        process.start()
        return process, time.monotonic()

    def _supervise(self, sockets: Sockets) -> None:
        workers = [self._start(sockets, i) for i in range(self.settings.workers)]
        logger.info("%d gateway workers started", len(workers))
        try:
            while not self._stop.wait(0.5):
                for index, (process, started) in enumerate(workers):
                    if process.is_alive():
                        continue
                    assert process.pid is not None
                    multiprocess.mark_process_dead(process.pid)
                    if time.monotonic() - started < STARTUP_S:
                        raise SystemExit(
                            f"gateway worker {index} exited with status {process.exitcode} "
                            f"within {STARTUP_S:g} s of starting; see its log above"
                        )
                    logger.error(
                        "gateway worker %d exited with status %s; starting another",
                        index,
                        process.exitcode,
                    )
                    workers[index] = self._start(sockets, index)
        finally:
            self._stop_all([process for process, _ in workers])

    def _stop_all(self, processes: list[multiprocessing.process.BaseProcess]) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_TIMEOUT_S + 5
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
