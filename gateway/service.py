"""What the HTTP handlers share: settings, metrics, the in-flight bound, Triton and the catalog.

The handlers depend on the small protocols below rather than on ``TritonClient`` and
``ModelCatalog`` themselves, which keeps this layer testable without a Triton server; the app's
lifespan plugs in the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import HTTPConnection

from aicoco import AiCOCOOutput
from gateway.errors import ServerBusy, ServiceUnavailable
from gateway.metrics import Metrics
from gateway.request import InferenceRequest
from gateway.settings import Settings


class Pipeline(Protocol):
    async def __call__(self, request: InferenceRequest) -> AiCOCOOutput: ...


class ModelDescription(Protocol):
    @property
    def name(self) -> str: ...

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


class Catalog(Protocol):
    async def pipeline(self, name: str) -> Pipeline: ...

    async def describe(self) -> Sequence[ModelDescription]: ...


class TritonHealth(Protocol):
    async def server_ready(self) -> bool: ...

    async def model_ready(self, name: str) -> bool: ...


class InFlight:
    """Counts inference requests being served; refuses (never queues) past the limit.

    Requests that wait in a queue hold their uploads and sockets while making no progress and
    hide overload from the load balancer; an immediate 503 with ``Retry-After`` lets the client
    (or another replica) take it. Everything runs on one event loop, so a plain counter is exact.
    """

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.count = 0
        self._gauge = metrics.in_flight

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.count >= self.limit:
            raise ServerBusy(
                f"{self.limit} inference requests are already being processed (MAX_IN_FLIGHT); "
                f"retry shortly",
                details={"limit": self.limit},
            )
        self.count += 1
        self._gauge.inc()
        try:
            yield
        finally:
            self.count -= 1
            self._gauge.dec()


@dataclass
class Service:
    settings: Settings
    metrics: Metrics
    in_flight: InFlight
    catalog: Catalog | None = None
    """Set by the lifespan once Triton's client exists."""
    triton: TritonHealth | None = None

    def require_catalog(self) -> Catalog:
        if self.catalog is None:
            raise ServiceUnavailable("the gateway is starting; retry shortly")
        return self.catalog

    def require_triton(self) -> TritonHealth:
        if self.triton is None:
            raise ServiceUnavailable("the gateway is starting; retry shortly")
        return self.triton


def service_of(connection: HTTPConnection) -> Service:
    service = connection.app.state.service
    assert isinstance(service, Service)
    return service
