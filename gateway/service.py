"""What the HTTP handlers share: settings, metrics, admission, the CPU pool, Triton and the catalog.

The handlers depend on the small protocols below rather than on ``TritonClient`` and
``ModelCatalog`` themselves, which keeps this layer testable without a Triton server; the app's
lifespan plugs in the real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import HTTPConnection

from gateway.admission import InferenceQueue, UploadGate
from gateway.cpu_pool import CpuPool
from gateway.dicomweb.client import DicomwebClient
from gateway.inference import Pipeline
from gateway.jobs.board import JobBoard
from gateway.metrics import Metrics
from gateway.records import RecordsStore
from gateway.schemas import ModelInfo
from gateway.settings import Settings
from gateway.upload_pace import Pace


class Catalog(Protocol):
    async def pipeline(self, name: str) -> Pipeline: ...

    async def describe(self) -> Sequence[ModelInfo]: ...


class TritonHealth(Protocol):
    async def server_ready(self) -> bool: ...

    async def model_ready(self, name: str) -> bool: ...


@dataclass(frozen=True)
class Service:
    """Everything a request may use, made by the app's lifespan and handed to each request in
    Starlette's lifespan state: nothing in it is ever missing or replaced while the app runs."""

    settings: Settings
    metrics: Metrics
    uploads: UploadGate
    queue: InferenceQueue
    pace: Pace
    """The upload pace, shared by body reading and the drain after early answers."""
    cpu: CpuPool
    catalog: Catalog
    triton: TritonHealth
    openapi: dict[str, Any]
    """``/openapi.json``, built once per app from its settings."""
    records: RecordsStore
    """Where tabular answers' records artifacts are written and served from."""
    jobs: JobBoard
    """The jobs' store and files, and the jobs this process runs."""
    pacs: DicomwebClient | None = None
    """The PACS's DICOMweb client; None when DICOMWEB_URL is not set."""


def service_of(connection: HTTPConnection) -> Service:
    service = connection.state.service
    assert isinstance(service, Service), "the app's lifespan did not run"
    return service


async def model_info(catalog: Catalog, name: str) -> ModelInfo:
    """What the catalog says of one model; a model it does not list (a custom pipeline's, say)
    is described by its name alone: task unknown, version unknown."""
    return next((m for m in await catalog.describe() if m.name == name), ModelInfo(name=name))
