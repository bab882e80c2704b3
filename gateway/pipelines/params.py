"""The ``aicoco.*`` parameters of a model's ``config.pbtxt``: parsed, validated, typed.

A model folder is self-describing: its config says what task it does, what its channels mean and
how a file becomes its input tensor. A mistake there (a typo in a key, a threshold of 5, a JSON
comma) is the deployment's bug, not the client's; it must surface as one clear error naming the
model and the parameter, at the first request or in ``GET /models``, never as a wrong answer.
Unknown keys are refused for the same reason: a misspelt ``treshold`` silently ignored would run
the model with the default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, NoReturn, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aicoco import CategorySpec, RegressionSpec
from gateway.errors import InvalidModelConfig
from gateway.readers.tables import Column, ColumnType

Reads = Literal["image", "volume", "table", "image+table"]
"""What a task's model takes: ``aicoco.input`` for an image (a volume: with
``aicoco.sliding_window``), ``aicoco.table`` for a table."""
Declares = Literal["categories", "regressions"]
"""What a task's model must declare at least one of; its output vector is named for it."""
VECTOR: dict[str, str] = {"categories": "probabilities", "regressions": "values"}
"""The output tensor of a model that answers one value per category or regression."""

PREFIX = "aicoco."
TASK = "aicoco.task"
CATEGORIES = "aicoco.categories"
REGRESSIONS = "aicoco.regressions"
INPUT = "aicoco.input"
OUTPUT = "aicoco.output"
TABLE = "aicoco.table"
SLIDING_WINDOW = "aicoco.sliding_window"
KNOWN = (TASK, CATEGORIES, REGRESSIONS, INPUT, OUTPUT, TABLE, SLIDING_WINDOW)

UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]
"""A threshold on a probability, a score or an overlap: a number in [0, 1]."""


class StrictModel(BaseModel):
    """A parameter's model: unknown keys refused (a misspelt key must not fall back to its
    default), values frozen. A new task's ``aicoco.output`` model subclasses it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(StrictModel):
    """How files become the ``image`` tensor ``[N, 1, H, W]`` FP32."""

    size: tuple[Annotated[int, Field(ge=1, le=16384)], Annotated[int, Field(ge=1, le=16384)]]
    window: tuple[float, Annotated[float, Field(gt=0)]] | None = None
    """``(center, width)`` in HU, applied only to images whose values are HU."""
    scale: Literal["dtype", "minmax"] = "dtype"
    dims: Literal[2, 3] = 2


class ClassificationOutput(StrictModel):
    threshold: UnitInterval = 0.5
    aggregate: Literal["max", "mean"] = "max"
    """How per-slice probabilities of a series combine before the threshold."""


class RegressionOutput(StrictModel):
    scale: float = 1.0
    offset: float = 0.0
    aggregate: Literal["mean", "median", "max", "min"] = "mean"
    """How per-slice values of a series combine into the series' value."""


class DetectionOutput(StrictModel):
    score_threshold: UnitInterval = 0.5
    iou_threshold: UnitInterval = 0.5
    max_detections: Annotated[int, Field(ge=1)] = 100


class SegmentationOutput(StrictModel):
    threshold: UnitInterval = 0.5
    instances: bool = False


def _no_repeats(names: list[str], what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"duplicate {what} {repeated}")


PositiveMM = Annotated[float, Field(gt=0, le=1000)]
"""A voxel's size along one axis, in millimetres."""
RoiSide = Annotated[int, Field(ge=1, le=1024)]


class WindowIntensity(StrictModel):
    """The 2D pipelines' CT window: clipped to ``center +- width / 2``, mapped to 0..1."""

    kind: Literal["window"]
    window: tuple[float, Annotated[float, Field(gt=0)]]


class RangeIntensity(StrictModel):
    """MONAI ``ScaleIntensityRange``, with its argument names."""

    kind: Literal["range"]
    a_min: float
    a_max: float
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = False

    @model_validator(mode="after")
    def _span(self) -> RangeIntensity:
        if self.a_max == self.a_min:
            raise ValueError("a_min and a_max must differ")
        return self


class ZScoreIntensity(StrictModel):
    """nnU-Net's CT normalisation: clipped to ``clip``, then ``(x - mean) / std``."""

    kind: Literal["zscore"]
    mean: float
    std: Annotated[float, Field(gt=0)]
    clip: tuple[float, float] | None = None


class VolumeZScoreIntensity(StrictModel):
    """MONAI ``NormalizeIntensity()``: the volume's own mean and standard deviation (MR)."""

    kind: Literal["volume_zscore"]


class NoIntensity(StrictModel):
    kind: Literal["none"]


Intensity = Annotated[
    WindowIntensity | RangeIntensity | ZScoreIntensity | VolumeZScoreIntensity | NoIntensity,
    Field(discriminator="kind"),
]


class VolumeInputSpec(StrictModel):
    """How a series becomes the volume a patch-based 3D model's patches are cut from."""

    spacing: tuple[PositiveMM, PositiveMM, PositiveMM] | None = None
    """``(z, y, x)`` mm to resample to (MONAI ``Spacing``, linear); None: the native grid."""
    intensity: Intensity = NoIntensity(kind="none")


class SlidingWindowSpec(StrictModel):
    """MONAI ``sliding_window_inference``'s arguments, with its defaults, and mirroring."""

    roi: tuple[RoiSide, RoiSide, RoiSide]
    """The model's patch ``(z, y, x)``, its input tensor's last three dimensions."""
    overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    blend: Literal["constant", "gaussian"] = "constant"
    sigma_scale: Annotated[float, Field(gt=0.0)] = 0.125
    batch: Annotated[int, Field(ge=1)] | None = None
    """Patches per Triton request (MONAI's ``sw_batch_size``); default the model's
    ``max_batch_size``."""
    padding: Literal["constant", "replicate", "reflect"] = "constant"
    padding_value: float = 0.0
    mirror_axes: tuple[Literal[0, 1, 2], ...] = ()
    """Axes ``(z, y, x)`` = ``(0, 1, 2)`` whose flips are averaged, as nnU-Net's mirroring."""

    @field_validator("mirror_axes")
    @classmethod
    def _distinct(cls, axes: tuple[int, ...]) -> tuple[int, ...]:
        _no_repeats([str(axis) for axis in axes], "axes")
        return axes


class VolumeSegmentationOutput(StrictModel):
    activation: Literal["softmax", "sigmoid", "none"] = "softmax"
    """Applied to the blended model output; ``none``: the model answers probabilities."""
    decision: Literal["argmax", "threshold"] = "argmax"
    """``argmax``: mutually exclusive labels, channel 0 the background (no category);
    ``threshold``: each category's channel at or above ``threshold``, overlaps allowed."""
    threshold: UnitInterval = 0.5
    instances: bool = False


class ColumnSpec(StrictModel):
    name: Annotated[str, Field(min_length=1)]
    dtype: ColumnType = "float"


class TableSpec(StrictModel):
    """The table a tabular or hybrid model takes: ``features`` FP32 ``[window_size, columns]``
    per record (tabular) or per image (hybrid), columns in this order."""

    columns: Annotated[list[ColumnSpec], Field(min_length=1)]
    window_size: Annotated[int, Field(ge=1)] = 1

    @field_validator("columns")
    @classmethod
    def _unique(cls, columns: list[ColumnSpec]) -> list[ColumnSpec]:
        _no_repeats([column.name for column in columns], "column names")
        return columns

    def reader_columns(self) -> tuple[Column, ...]:
        return tuple(Column(column.name, column.dtype) for column in self.columns)


class TabularClassificationOutput(StrictModel):
    threshold: UnitInterval = 0.5
    mode: Literal["threshold", "argmax"] = "threshold"
    """``argmax``: exactly one category per record (multiclass, one-hot); ``threshold``: each
    category whose probability reaches it (binary, multilabel)."""


class TabularRegressionOutput(StrictModel):
    scale: float = 1.0
    offset: float = 0.0


OutputSpec = ClassificationOutput | RegressionOutput | DetectionOutput | SegmentationOutput


@dataclass(frozen=True)
class TaskSpec:
    """The parameters' side of a task (:mod:`gateway.pipelines.tasks` declares each once)."""

    name: str
    reads: Reads
    output: type[StrictModel]
    """The model of its ``aicoco.output``."""
    declares: Declares


class _CategoryList(BaseModel):
    items: list[CategorySpec]

    @field_validator("items")
    @classmethod
    def _unique(cls, items: list[CategorySpec]) -> list[CategorySpec]:
        _no_repeats([item.name for item in items], "names")
        return items


class _RegressionList(BaseModel):
    items: list[RegressionSpec]


S = TypeVar("S", bound=OutputSpec, covariant=True)


class Answers:
    """What a model answers for each input: one value per declared category, or per declared
    regression, in an output tensor named for which."""

    declares: Declares
    categories: tuple[CategorySpec, ...]
    regressions: tuple[RegressionSpec, ...]

    @property
    def vector(self) -> str:
        """The output tensor's name."""
        return VECTOR[self.declares]

    @property
    def declared(self) -> int:
        """How many values the vector holds."""
        return len(self.categories if self.declares == "categories" else self.regressions)


@dataclass(frozen=True)
class ModelParams(Answers, Generic[S]):
    """Everything a built-in pipeline needs to know about its model, from its config alone;
    ``output`` is the task's own spec."""

    task: str
    declares: Declares
    categories: tuple[CategorySpec, ...]
    regressions: tuple[RegressionSpec, ...]
    input: InputSpec
    output: S


@dataclass(frozen=True)
class VolumeParams(Answers):
    """A patch-based 3D segmentation model's parameters."""

    task: str
    declares: Declares
    categories: tuple[CategorySpec, ...]
    regressions: tuple[RegressionSpec, ...]
    input: VolumeInputSpec
    window: SlidingWindowSpec
    output: VolumeSegmentationOutput


def has_aicoco_parameters(parameters: Mapping[str, str]) -> bool:
    return any(key.startswith(PREFIX) for key in parameters)


@dataclass(frozen=True)
class TableParams(Answers):
    """A tabular or hybrid model's parameters; ``input`` (the image) only for hybrid ones."""

    task: str
    declares: Declares
    categories: tuple[CategorySpec, ...]
    regressions: tuple[RegressionSpec, ...]
    table: TableSpec
    output: StrictModel
    input: InputSpec | None


def declared_task(parameters: Mapping[str, str]) -> str:
    return parameters.get(TASK, "").strip()


def parse(
    model: str, parameters: Mapping[str, str], task: TaskSpec
) -> ModelParams[Any] | TableParams | VolumeParams:
    """Validate the ``aicoco.*`` entries of a model of ``task``: :class:`ModelParams` for an
    image model, :class:`VolumeParams` for a volumetric one, :class:`TableParams` for a tabular
    or hybrid one. Other parameters (the backend's) are left alone."""
    unknown = sorted(k for k in parameters if k.startswith(PREFIX) and k not in KNOWN)
    if unknown:
        _fail(model, unknown[0], f"unknown parameter; the known ones are {', '.join(KNOWN)}")
    categories = tuple(
        _validate(model, CATEGORIES, _CategoryList, _json(model, parameters, CATEGORIES, []))
    )
    regressions = tuple(
        _validate(model, REGRESSIONS, _RegressionList, _json(model, parameters, REGRESSIONS, []))
    )
    if task.declares == "categories" and not categories:
        _fail(model, CATEGORIES, f"a {task.name} model needs at least one category")
    if task.declares == "regressions" and not regressions:
        _fail(model, REGRESSIONS, f"a {task.name} model needs at least one regression")
    if SLIDING_WINDOW in parameters and task.reads != "volume":
        _fail(model, SLIDING_WINDOW, f"is for volumetric models; a {task.name} model has none")
    if task.reads == "volume":
        return _volume(model, parameters, task, categories, regressions)
    image = "image" in task.reads
    if TABLE in parameters and "table" not in task.reads:
        _fail(model, TABLE, f"is for tabular and hybrid models; a {task.name} model reads images")
    if INPUT in parameters and not image:
        _fail(model, INPUT, f"is for image models; a {task.name} model reads only its table")
    input_spec = None
    if image:
        if INPUT not in parameters:
            _fail(model, INPUT, 'is required, e.g. {"size": [256, 256], "scale": "dtype"}')
        input_spec = _model(model, INPUT, InputSpec, _json(model, parameters, INPUT, {}))
    output = _model(model, OUTPUT, task.output, _json(model, parameters, OUTPUT, {}))
    if "table" not in task.reads:
        assert input_spec is not None
        return ModelParams(task.name, task.declares, categories, regressions, input_spec, output)
    if TABLE not in parameters:
        _fail(model, TABLE, 'is required, e.g. {"columns": [{"name": "age"}], "window_size": 1}')
    table = _model(model, TABLE, TableSpec, _json(model, parameters, TABLE, {}))
    return TableParams(task.name, task.declares, categories, regressions, table, output, input_spec)


def _volume(
    model: str,
    parameters: Mapping[str, str],
    task: TaskSpec,
    categories: tuple[CategorySpec, ...],
    regressions: tuple[RegressionSpec, ...],
) -> VolumeParams:
    if TABLE in parameters:
        _fail(model, TABLE, f"is for tabular and hybrid models; a {task.name} model reads images")
    if SLIDING_WINDOW not in parameters:
        _fail(model, SLIDING_WINDOW, 'is required, e.g. {"roi": [64, 128, 128], "overlap": 0.5}')
    input_spec = _model(model, INPUT, VolumeInputSpec, _json(model, parameters, INPUT, {}))
    window = _model(
        model, SLIDING_WINDOW, SlidingWindowSpec, _json(model, parameters, SLIDING_WINDOW, {})
    )
    output = _model(model, OUTPUT, VolumeSegmentationOutput, _json(model, parameters, OUTPUT, {}))
    return VolumeParams(
        task.name, task.declares, categories, regressions, input_spec, window, output
    )


def _json(model: str, parameters: Mapping[str, str], key: str, default: Any) -> Any:
    raw = parameters.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(model, key, f"is not valid JSON ({exc.msg} at character {exc.pos})")


def _validate(
    model: str, key: str, kind: type[_CategoryList] | type[_RegressionList], value: Any
) -> list[Any]:
    if not isinstance(value, list):
        _fail(model, key, f"must be a JSON list of objects, got {type(value).__name__}")
    try:
        return list(kind.model_validate({"items": value}).items)
    except ValidationError as exc:
        _fail(model, key, f"is invalid: {_explain(exc)}")


M = TypeVar("M", bound=StrictModel)


def _model(model: str, key: str, kind: type[M], value: Any) -> M:
    if not isinstance(value, dict):
        _fail(model, key, f"must be a JSON object, got {type(value).__name__}")
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        _fail(model, key, f"is invalid: {_explain(exc)}")


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"] if part != "items")
        problems.append(f"{location or 'value'}: {error['msg']}")
    return "; ".join(problems)


def _fail(model: str, key: str, problem: str) -> NoReturn:
    raise InvalidModelConfig(
        f"model '{model}': parameter '{key}' {problem}",
        details={"model": model, "parameter": key},
    )
