"""What one inference request carries from the HTTP layer into a pipeline, and what a pipeline is.

The HTTP layer (``invocations``) builds it; pipelines read it. Everything per request lives here,
never on a pipeline object, so one pipeline instance serves concurrent requests safely.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aicoco import AiImage, IdGenerator
from aicoco.tables import AiTable
from gateway.progress import Progress

StageObserver = Callable[[str, float], None]
"""Called with a stage name (parse, read, preprocess, triton, postprocess, format) and seconds."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file, already streamed to the request's own folder."""

    file_name: str
    """The multipart part's filename, exactly as sent: the AiCOCO ``file_name``."""
    path: Path
    size: int
    content_type: str | None = None


@dataclass
class InferenceRequest:
    request_id: str
    model_name: str
    images: list[AiImage]
    """The validated ``images`` entries, in the order the client sent them."""
    uploads: dict[str, Upload]
    """Uploads by exact file name."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Every other top-level field of the request (``meta`` and unknown keys), parsed JSON."""
    tables: list[AiTable] = field(default_factory=list)
    """The validated ``tables`` entries (tabular and hybrid requests), in the client's order."""
    ids: IdGenerator = field(default_factory=IdGenerator)
    observe: StageObserver | None = None
    progress: Progress = field(default_factory=Progress)
    """Units of long work done (a volumetric model's patches), reported by the pipeline."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; the service turns these into the per-stage latency histograms. The
        stage is the request's :attr:`Progress.stage` while it runs (a job shows it)."""
        self.progress.stage = name
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.observe is not None:
                self.observe(name, time.perf_counter() - start)


class Document(Protocol):
    """An answer: the image, tabular or hybrid AiCOCO document."""

    def to_json_bytes(self) -> bytes: ...


class Pipeline(Protocol):
    """What the HTTP layer calls: one request in, one AiCOCO document out."""

    async def __call__(self, request: InferenceRequest) -> Document: ...
