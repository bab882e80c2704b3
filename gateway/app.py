"""The app factory: the routes of :mod:`gateway.routes`, the request-context middleware, error
rendering and the lifespan.

One ``TritonClient`` per app, over a :class:`~gateway.triton.TritonPool` (one gRPC channel
per Triton), created in the lifespan inside the running loop and shared by every request. Tests
and benchmarks may pass their own Triton and catalog.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admission import InferenceQueue, UploadGate
from gateway.auth import AUDIT
from gateway.cpu_pool import CpuPool
from gateway.dicomweb.client import DicomwebClient
from gateway.errors import ApiError, InternalError, MethodNotAllowed, RouteNotFound
from gateway.jobs.board import JobBoard
from gateway.jobs.callbacks import CallbackSender
from gateway.jobs.files import JobFiles
from gateway.jobs.store import JobStore, database_of
from gateway.jobs.upkeep import Upkeep
from gateway.jobs.worker import JobWorkers
from gateway.logs import request_id_var
from gateway.metrics import Metrics
from gateway.openapi import openapi_document
from gateway.pipelines.catalog import Factories, ModelCatalog
from gateway.records import RecordsStore
from gateway.refusals import CLOSE_CONNECTION, UnreadBodyMiddleware
from gateway.routes import endpoints
from gateway.service import Catalog, Service, TritonHealth
from gateway.settings import Settings
from gateway.triton import TritonClient, TritonPool
from gateway.upload_pace import Pace

logger = logging.getLogger("gateway")
access_logger = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"
WARM_UP_TIMEOUT_S = 30.0
_VALID_REQUEST_ID = re.compile(r"^[\x20-\x7e]{1,128}$")


def create_app(
    settings: Settings,
    *,
    triton: TritonHealth | None = None,
    catalog: Catalog | None = None,
    pipelines: Factories | None = None,
) -> Starlette:
    """The gateway app. Without ``triton`` and ``catalog`` the lifespan builds the real ones;
    ``pipelines`` makes the pipelines of some models (FLaVor's ``InferAPP`` serves its class
    through this) in place of the built-in ones and ``PIPELINES``."""
    if (triton is None) != (catalog is None):
        raise ValueError("pass both triton and catalog, or neither")
    # What the middleware needs exists before the lifespan; the rest is made by it.
    metrics = Metrics()
    pace = Pace(settings.upload_idle_timeout_s, settings.upload_min_rate)
    served = endpoints(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Service]]:
        with CpuPool(settings.cpu_workers) as cpu:
            client: TritonClient | None = None
            records = RecordsStore.of(settings)
            if triton is not None and catalog is not None:
                health, models = triton, catalog
            else:
                pool = TritonPool(settings.triton_url.split(","), probe_s=settings.triton_probe_s)
                await pool.start()
                client = TritonClient(settings.triton_url, settings.triton_timeout_s, grpc=pool)
                health, models = client, ModelCatalog(client, settings, cpu, records, pipelines)
            pacs = DicomwebClient(settings) if settings.dicomweb_url else None
            board = JobBoard(
                settings,
                JobStore(database_of(settings.jobs_database_url, settings.jobs_dir)),
                JobFiles(settings.jobs_dir),
                metrics,
            )
            service = Service(
                settings=settings,
                metrics=metrics,
                uploads=UploadGate(settings.max_uploads, metrics),
                queue=InferenceQueue(
                    settings.max_in_flight, settings.max_queue, settings.queue_timeout_s, metrics
                ),
                pace=pace,
                cpu=cpu,
                catalog=models,
                triton=health,
                openapi=openapi_document(settings, served),
                records=records,
                jobs=board,
                pacs=pacs,
            )
            sweeper = asyncio.create_task(_sweep_records(records, cpu))
            jobs = _start_jobs(service)
            try:
                await _warm_up(service)
                yield {"service": service}
            finally:
                logger.info("shutting down")
                sweeper.cancel()
                for task in jobs:
                    task.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                await asyncio.to_thread(board.store.close)
                if client is not None:
                    await client.close()
                if pacs is not None:
                    await pacs.close()

    app = Starlette(
        routes=[endpoint.route() for endpoint in served],
        lifespan=lifespan,
        exception_handlers={ApiError: api_error_handler, HTTPException: http_error_handler},
    )
    probes = frozenset(endpoint.path for endpoint in served if endpoint.probe)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, probes=probes)
    # Outermost: it must see every response, the error pages of the middleware above included.
    app.add_middleware(UnreadBodyMiddleware, pace=pace)
    return app


async def _sweep_records(records: RecordsStore, cpu: CpuPool) -> None:
    """Retention runs on a timer too, so an idle gateway still lets its artifacts expire."""
    period = min(60.0, max(1.0, records.retention_s / 10))
    while True:
        try:
            await cpu.run(records.sweep)
        except OSError as exc:
            logger.warning("records sweep failed: %s", exc)
        await asyncio.sleep(period)


def _start_jobs(service: Service) -> list[asyncio.Task[None]]:
    """The job workers, the upkeep and the callback sender of this process."""
    board, settings = service.jobs, service.settings
    upkeep = Upkeep(board)
    sender = CallbackSender(board.store, settings)

    def ended() -> None:
        upkeep.wake()
        sender.wake()

    board.on_end = ended
    workers = JobWorkers(service, board)
    tasks = [asyncio.create_task(workers.run()) for _ in range(settings.job_workers)]
    return [*tasks, asyncio.create_task(upkeep.run()), asyncio.create_task(sender.run())]


async def _warm_up(service: Service) -> None:
    """Load the default model's pipeline now so the first request does not pay for it.

    Failure is logged, not fatal: in compose the gateway may start before Triton, and
    readiness reports the state until Triton is up.
    """
    name = service.settings.default_model
    try:
        async with asyncio.timeout(WARM_UP_TIMEOUT_S):
            await service.catalog.pipeline(name)
    except (ApiError, TimeoutError) as exc:
        logger.warning("default model %r is not ready yet: %s", name, exc)
    else:
        logger.info("default model %r is ready", name)


# Errors.


def error_response(error: ApiError, scope: Scope) -> Response:
    state = scope.setdefault("state", {})
    state["error_code"] = error.code
    if error.closes_connection:
        state[CLOSE_CONNECTION] = True
    request_id = state.get("request_id")
    return JSONResponse(error.body(request_id), status_code=error.status, headers=error.headers())


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status >= 500:
        logger.warning("%s: %s", exc.code, exc.message, extra={"error_code": exc.code})
    return error_response(exc, request.scope)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """The router's 404 and 405, in the gateway's JSON error format."""
    assert isinstance(exc, HTTPException)
    error: ApiError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        response = error_response(error, request.scope)
        response.headers.update(exc.headers or {})
        return response
    error = RouteNotFound(f"no route {request.url.path}; GET /docs lists the routes")
    return error_response(error, request.scope)


# Request context: id, logs, metrics, last-resort error handling.


def request_id_from(headers: Headers) -> str:
    """The client's ``X-Request-ID`` when it is printable ASCII of at most 128 characters."""
    given = headers.get(REQUEST_ID_HEADER, "").strip()
    return given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so request bodies stream through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics, probes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.probes = probes  # whose successful access lines are DEBUG (Endpoint.probe)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status = 499
            logger.info("the client disconnected; its request was abandoned")
        except Exception:
            logger.exception("unhandled error", extra={"error_code": InternalError.code})
            if response_started:
                raise
            error = InternalError(
                "an unexpected error in the gateway; its log has the details under this request_id"
            )
            await error_response(error, scope)(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        self.metrics.requests.labels(route=template, method=method, status=str(status)).inc()
        self.metrics.request_seconds.labels(route=template).observe(seconds)
        code = scope.get("state", {}).get("error_code")
        if code is not None:
            self.metrics.errors.labels(code=code).inc()
        quiet = template in self.probes and status < 400
        level = logging.DEBUG if quiet else logging.INFO
        if not access_logger.isEnabledFor(level):
            return
        extra = {
            "method": method,
            "path": scope["path"],
            "route": template,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        if code is not None:
            extra["error_code"] = code
        record = scope.get("state", {}).get(AUDIT)
        if record is not None:
            # A protected route's line is its audit line too: who (the key's id), what (the
            # model), how much (files, bytes), with what outcome. Never a file name, a UID or a
            # tag value.
            extra.update({"audit": True, "key": None, "model": None, "files": 0, "bytes": 0})
            extra.update(record)
        access_logger.log(level, "%s %s %s", method, scope["path"], status, extra=extra)
