"""The JSON bodies the gateway answers besides AiCOCO: models, readiness, errors.

Declared once as pydantic models: the handlers build their answers with them and the OpenAPI
document takes its schemas from `model_json_schema()`, so the two cannot disagree. (AiCOCO's
own schema ships with the `aicoco` package.)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_UID = r"^[0-9]+(\.[0-9]+)*$"
"""A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters."""


class _Documented(BaseModel):
    """Attribute docstrings become the schema's descriptions (Markdown, for OpenAPI readers);
    a field with a default is still always sent, so the answer's schema requires it."""

    model_config = ConfigDict(
        use_attribute_docstrings=True, json_schema_serialization_defaults_required=True
    )


class ModelInfo(_Documented):
    """One model as `GET /models` lists it, including models that failed to load."""

    name: str
    task: str | None = None
    """The built-in pipeline's task, the custom pipeline's, or what `aicoco.task` names."""
    categories: list[dict[str, Any]] = []
    regressions: list[dict[str, Any]] = []
    ready: bool = False
    versions: list[str] = []
    state: str = ""
    """Triton's state: READY, UNAVAILABLE, LOADING... (empty when Triton has not seen it)."""
    reason: str | None = None
    """Why the model cannot serve: Triton's load error or the gateway's configuration check."""
    pipeline: str = "builtin"
    """`builtin` or the custom pipeline's `package.module:Class`."""
    table: dict[str, Any] | None = None
    """Tabular and hybrid models: the columns they take (name, dtype, in order) and the
    `window_size`."""
    volume: dict[str, Any] | None = None
    """Volumetric models: the grid they work on (`spacing`, `intensity`) and their
    `sliding_window` (`roi` and the rest)."""


class ModelList(_Documented):
    """`GET /models`."""

    default_model: str
    models: list[ModelInfo]


class Readiness(_Documented):
    """`GET /health/ready`: 200 when ready, 503 with the same body when not."""

    status: Literal["ready", "not_ready"]
    triton: bool
    """Triton answers and says it is ready."""
    default_model: str
    default_model_ready: bool


class Liveness(_Documented):
    """`GET /health/live`."""

    status: Literal["alive"] = "alive"


class ErrorContent(_Documented):
    # `details` is left out when empty, so the answer's schema does not require it.
    model_config = {
        **_Documented.model_config,
        "json_schema_serialization_defaults_required": False,
    }

    code: str
    """Stable and machine-readable; the codes are listed in `x-error-codes`."""
    message: str
    """What went wrong and what to change."""
    request_id: str | None
    """The request's `X-Request-ID`, also in the response header and the log lines."""
    details: dict[str, Any] = Field(default_factory=dict)
    """The field, file or limit concerned; absent when there is none."""


class ErrorBody(_Documented):
    """Every error answer."""

    error: ErrorContent


class WindowLevel(_Documented):
    """A linear VOI window (DICOM PS3.3 C.11.2.1.2): `center - width/2` is black, `center +
    width/2` white."""

    center: float
    width: float = Field(gt=0)


class RenderedSlice(_Documented):
    """One slice of the stack, in the order the pipelines see it."""

    z: int
    """Position in the stack (geometric order for a DICOM series)."""
    image_id: str
    """The `images` entry of this slice: what AiCOCO annotations name as `image_id`."""
    file_name: str
    index: int
    png: str
    """The slice as an 8-bit PNG, base64: windowed grayscale, or the RGB pixels as read."""


class Rendering(_Documented):
    """`POST /viewer/render`: the request's images as the readers read them, as PNG slices."""

    width: int
    height: int
    depth: int
    rgb: bool
    hounsfield: bool
    """The values are Hounsfield units, so the CT presets apply."""
    modality: str | None
    value_range: tuple[float, float]
    """The lowest and highest finite value in the stack, for a free window/level control."""
    window: WindowLevel | None
    """The window the slices were rendered with; null for RGB images."""
    presets: dict[str, WindowLevel]
    """The named windows `window=` accepts besides `auto` and `center,width`."""
    slices: list[RenderedSlice]


class PacsInvocation(BaseModel):
    """`POST /dicomweb/invocations`: which study to fetch, and what to store back."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    study_instance_uid: str = Field(pattern=_UID, max_length=64)
    series_instance_uid: str | None = Field(default=None, pattern=_UID, max_length=64)
    """The series to run on; when absent, the series rules choose one of the study's."""
    store: bool = False
    """Store the DICOM result (SEG or SR) back into the study with STOW-RS."""
    output: Literal["seg", "sr", "dicom"] = "dicom"
    """What to store: `dicom` is a SEG for a segmentation model and an SR for the others."""
    min_slices: int = Field(default=1, ge=1)
    """A series with fewer slices is passed over (e.g. 2 or more for a 3-D model)."""


class StoredInstance(_Documented):
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str


class PacsResult(_Documented):
    """What the round trip did: the series used, the AiCOCO answer, the instances stored."""

    study_instance_uid: str
    series_instance_uid: str
    aicoco: dict[str, Any]
    """The AiCOCO document, as `POST /invocations` answers it."""
    stored: list[StoredInstance]


class JobProgress(_Documented):
    """How far the current piece of work has come, where the pipeline reports it."""

    unit: str
    """`slices` (read), `patches` (a volumetric model's windows, each with its mirrorings)."""
    done: int
    total: int


class JobError(ErrorContent):
    """A failed job's error: the object a synchronous call would have answered, and its
    status."""

    status: int
    """The HTTP status the synchronous call would have answered."""


class JobResult(_Documented):
    href: str
    """`GET` it for the answer, as the synchronous call would have answered it."""
    media_type: str
    bytes: int


class JobCallback(_Documented):
    url: str
    state: Literal["pending", "delivered", "failed"]
    """`pending` until the job ends and the receiver answers 2xx (`delivered`); `failed` after
    the last retry."""
    attempts: int


class JobStatus(_Documented):
    """A job, as `GET /jobs/{id}` answers it and its callback receives it."""

    id: str
    href: str
    model: str
    kind: Literal["files", "dicomweb"]
    """`files`: uploaded as to `/invocations`; `dicomweb`: a study in the PACS."""
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    queue_position: int | None
    """While queued: how many jobs run before it (0: next). Null otherwise."""
    stage: str | None
    """While running: `starting`, `retrieve`, `parse`, `read`, `preprocess`, `triton`,
    `postprocess`, `format`, `store` or `save`."""
    progress: JobProgress | None
    attempts: int
    """Times it was started: 2 when a gateway stopped while it ran and it was queued again."""
    created_at: str
    """When it was submitted (ISO 8601, UTC)."""
    started_at: str | None
    finished_at: str | None
    error: JobError | None
    result: JobResult | None
    """Where its answer is, once it succeeded."""
    callback: JobCallback | None
