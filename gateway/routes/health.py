"""``/ping``, ``/health/live``, ``/health/ready`` and ``/metrics``: what orchestrators and
Prometheus poll. Open without an API key, since a liveness probe must never need a secret."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import ApiError
from gateway.routes.endpoint import Endpoint, fixed, json_response, ref
from gateway.schemas import Liveness, Readiness
from gateway.service import service_of

logger = logging.getLogger("gateway")

READY_TIMEOUT_S = 5.0
"""A readiness probe answers within this, even when Triton hangs."""


async def ping(request: Request) -> Response:
    return Response(status_code=204)


async def live(request: Request) -> Response:
    return JSONResponse(Liveness().model_dump())


async def ready(request: Request) -> Response:
    service = service_of(request)
    name = service.settings.default_model
    triton_ready = model_ready = False
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            triton_ready = await service.triton.server_ready()
            model_ready = triton_ready and await service.triton.model_ready(name)
    except (ApiError, TimeoutError) as exc:
        logger.info("not ready: %s", exc)
    ok = triton_ready and model_ready
    body = Readiness(
        status="ready" if ok else "not_ready",
        triton=triton_ready,
        default_model=name,
        default_model_ready=model_ready,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    collected = service_of(request).metrics
    return Response(collected.render(), media_type=collected.content_type)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/ping",
        ping,
        fixed(
            {
                "summary": "FLaVor's health check: 204 while the process serves",
                "responses": {"204": {"description": "No content"}},
            }
        ),
        probe=True,
    ),
    Endpoint(
        "GET",
        "/health/live",
        live,
        fixed(
            {
                "summary": "Liveness: the process answers",
                "responses": {"200": json_response("Alive.", ref("Liveness"))},
            }
        ),
        probe=True,
    ),
    Endpoint(
        "GET",
        "/health/ready",
        ready,
        fixed(
            {
                "summary": "Readiness: Triton and the default model are ready",
                "responses": {
                    "200": json_response("Ready.", ref("Readiness")),
                    "503": json_response("Not ready.", ref("Readiness")),
                },
            }
        ),
        probe=True,
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        fixed(
            {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        ),
        probe=True,
    ),
]
