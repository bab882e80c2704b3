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
from typing import Annotated, Any, Generic, Literal, NoReturn, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aicoco import CategorySpec, RegressionSpec
from gateway.errors import InvalidModelConfig
from gateway.readers.tables import Column, ColumnType

Task = Literal["classification", "regression", "detection", "segmentation"]
TableTask = Literal[
    "tabular_classification", "tabular_regression", "hybrid_classification", "hybrid_regression"
]
TABLE_TASKS: tuple[TableTask, ...] = (
    "tabular_classification",
    "tabular_regression",
    "hybrid_classification",
    "hybrid_regression",
)

PREFIX = "aicoco."
TASK = "aicoco.task"
CATEGORIES = "aicoco.categories"
REGRESSIONS = "aicoco.regressions"
INPUT = "aicoco.input"
OUTPUT = "aicoco.output"
TABLE = "aicoco.table"
KNOWN = (TASK, CATEGORIES, REGRESSIONS, INPUT, OUTPUT, TABLE)

UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]
"""A threshold on a probability, a score or an overlap: a number in [0, 1]."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """How files become the ``image`` tensor ``[N, 1, H, W]`` FP32."""

    size: tuple[Annotated[int, Field(ge=1, le=16384)], Annotated[int, Field(ge=1, le=16384)]]
    window: tuple[float, Annotated[float, Field(gt=0)]] | None = None
    """``(center, width)`` in HU, applied only to images whose values are HU."""
    scale: Literal["dtype", "minmax"] = "dtype"
    dims: Literal[2, 3] = 2


class ClassificationOutput(_Strict):
    threshold: UnitInterval = 0.5
    aggregate: Literal["max", "mean"] = "max"
    """How per-slice probabilities of a series combine before the threshold."""


class RegressionOutput(_Strict):
    scale: float = 1.0
    offset: float = 0.0
    aggregate: Literal["mean", "median", "max", "min"] = "mean"
    """How per-slice values of a series combine into the series' value."""


class DetectionOutput(_Strict):
    score_threshold: UnitInterval = 0.5
    iou_threshold: UnitInterval = 0.5
    max_detections: Annotated[int, Field(ge=1)] = 100


class SegmentationOutput(_Strict):
    threshold: UnitInterval = 0.5
    instances: bool = False


def _no_repeats(names: list[str], what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"duplicate {what} {repeated}")


class ColumnSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    dtype: ColumnType = "float"


class TableSpec(_Strict):
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


class TabularClassificationOutput(_Strict):
    threshold: UnitInterval = 0.5
    mode: Literal["threshold", "argmax"] = "threshold"
    """``argmax``: exactly one category per record (multiclass, one-hot); ``threshold``: each
    category whose probability reaches it (binary, multilabel)."""


class TabularRegressionOutput(_Strict):
    scale: float = 1.0
    offset: float = 0.0


OutputSpec = ClassificationOutput | RegressionOutput | DetectionOutput | SegmentationOutput

_OUTPUTS: dict[str, type[OutputSpec]] = {
    "classification": ClassificationOutput,
    "regression": RegressionOutput,
    "detection": DetectionOutput,
    "segmentation": SegmentationOutput,
}


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


@dataclass(frozen=True)
class ModelParams(Generic[S]):
    """Everything a built-in pipeline needs to know about its model, from its config alone;
    ``output`` is the task's own spec."""

    task: Task
    categories: tuple[CategorySpec, ...]
    regressions: tuple[RegressionSpec, ...]
    input: InputSpec
    output: S


def has_aicoco_parameters(parameters: Mapping[str, str]) -> bool:
    return any(key.startswith(PREFIX) for key in parameters)


def parse_params(model: str, parameters: Mapping[str, str]) -> ModelParams[OutputSpec]:
    """Validate the ``aicoco.*`` entries; other parameters (the backend's) are left alone."""
    unknown = sorted(k for k in parameters if k.startswith(PREFIX) and k not in KNOWN)
    if unknown:
        _fail(model, unknown[0], f"unknown parameter; the known ones are {', '.join(KNOWN)}")
    raw_task = declared_task(parameters)
    if raw_task not in _OUTPUTS:
        tasks = ", ".join((*_OUTPUTS, *TABLE_TASKS))
        _fail(model, TASK, f"must be one of {tasks}, got {raw_task!r}")
    if TABLE in parameters:
        _fail(model, TABLE, f"is for tabular and hybrid models; a {raw_task} model reads images")
    task = cast(Task, raw_task)
    categories = tuple(
        _validate(model, CATEGORIES, _CategoryList, _json(model, parameters, CATEGORIES, []))
    )
    regressions = tuple(
        _validate(model, REGRESSIONS, _RegressionList, _json(model, parameters, REGRESSIONS, []))
    )
    if task in ("classification", "detection", "segmentation") and not categories:
        _fail(model, CATEGORIES, f"a {task} model needs at least one category")
    if task == "regression" and not regressions:
        _fail(model, REGRESSIONS, "a regression model needs at least one regression")
    if INPUT not in parameters:
        _fail(model, INPUT, 'is required, e.g. {"size": [256, 256], "scale": "dtype"}')
    input_spec = _model(model, INPUT, InputSpec, _json(model, parameters, INPUT, {}))
    output_spec = _model(model, OUTPUT, _OUTPUTS[task], _json(model, parameters, OUTPUT, {}))
    return ModelParams(task, categories, regressions, input_spec, output_spec)


_TABLE_OUTPUTS: dict[str, type[_Strict]] = {
    "tabular_classification": TabularClassificationOutput,
    "tabular_regression": TabularRegressionOutput,
    "hybrid_classification": ClassificationOutput,
    "hybrid_regression": RegressionOutput,
}


@dataclass(frozen=True)
class TableParams:
    """A tabular or hybrid model's parameters; ``input`` (the image) only for hybrid ones."""

    task: TableTask
    categories: tuple[CategorySpec, ...]
    regressions: tuple[RegressionSpec, ...]
    table: TableSpec
    output: _Strict
    input: InputSpec | None


def declared_task(parameters: Mapping[str, str]) -> str:
    return parameters.get(TASK, "").strip()


def parse_table_params(model: str, parameters: Mapping[str, str]) -> TableParams:
    """The ``aicoco.*`` entries of a tabular (``aicoco.table``) or hybrid (``aicoco.table`` and
    ``aicoco.input``) model."""
    unknown = sorted(k for k in parameters if k.startswith(PREFIX) and k not in KNOWN)
    if unknown:
        _fail(model, unknown[0], f"unknown parameter; the known ones are {', '.join(KNOWN)}")
    task = cast(TableTask, declared_task(parameters))
    categories = tuple(
        _validate(model, CATEGORIES, _CategoryList, _json(model, parameters, CATEGORIES, []))
    )
    regressions = tuple(
        _validate(model, REGRESSIONS, _RegressionList, _json(model, parameters, REGRESSIONS, []))
    )
    if task.endswith("classification") and not categories:
        _fail(model, CATEGORIES, f"a {task} model needs at least one category")
    if task.endswith("regression") and not regressions:
        _fail(model, REGRESSIONS, f"a {task} model needs at least one regression")
    if TABLE not in parameters:
        _fail(model, TABLE, 'is required, e.g. {"columns": [{"name": "age"}], "window_size": 1}')
    table = _model(model, TABLE, TableSpec, _json(model, parameters, TABLE, {}))
    input_spec = None
    if task.startswith("hybrid"):
        if INPUT not in parameters:
            _fail(model, INPUT, 'is required, e.g. {"size": [64, 64], "scale": "dtype"}')
        input_spec = _model(model, INPUT, InputSpec, _json(model, parameters, INPUT, {}))
    elif INPUT in parameters:
        _fail(model, INPUT, f"is for image models; a {task} model reads only its table")
    output = _model(model, OUTPUT, _TABLE_OUTPUTS[task], _json(model, parameters, OUTPUT, {}))
    return TableParams(task, categories, regressions, table, output, input_spec)


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


M = TypeVar("M", bound=_Strict)


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
