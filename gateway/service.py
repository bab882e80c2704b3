"""What the HTTP handlers share: settings, metrics, admission, Triton and the catalog.

The handlers depend on the small protocols below rather than on ``TritonClient`` and
``ModelCatalog`` themselves, which keeps this layer testable without a Triton server; the app's
lifespan plugs in the real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import HTTPConnection

from gateway.admission import InferenceQueue, UploadGate
from gateway.body import Pace
from gateway.errors import ServiceUnavailable
from gateway.metrics import Metrics
from gateway.request import Pipeline
from gateway.schemas import ModelInfo
from gateway.settings import Settings


class Catalog(Protocol):
    async def pipeline(self, name: str) -> Pipeline: ...

    async def describe(self) -> Sequence[ModelInfo]: ...


class TritonHealth(Protocol):
    async def server_ready(self) -> bool: ...

    async def model_ready(self, name: str) -> bool: ...


@dataclass
class Service:
    settings: Settings
    metrics: Metrics
    uploads: UploadGate
    queue: InferenceQueue
    pace: Pace
    """The upload pace, shared by body reading and the drain after early answers."""
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
