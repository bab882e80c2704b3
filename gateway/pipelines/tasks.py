"""The built-in tasks, each declared once: what its model reads, its ``aicoco.output``, what it
must declare, the pipeline that serves it and the answers it may give.

Everything else derives from :data:`TASKS`: the catalog builds a model's pipeline from it, the
parameter parser checks a config against it, ``output=`` is checked against a task's answers,
and error messages list its names. Adding a built-in task is one :class:`Task` here, its
pipeline class, and a test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from gateway.errors import InvalidModelConfig
from gateway.inference import Pipeline
from gateway.pipelines.base import PipelineBinding
from gateway.pipelines.builtin import (
    ClassificationPipeline,
    DetectionPipeline,
    RegressionPipeline,
    SegmentationPipeline,
)
from gateway.pipelines.hybrid import HybridPipeline
from gateway.pipelines.params import (
    TASK,
    ClassificationOutput,
    DetectionOutput,
    ModelParams,
    OutputSpec,
    RegressionOutput,
    SegmentationOutput,
    TableParams,
    TabularClassificationOutput,
    TabularRegressionOutput,
    TaskSpec,
    VolumeSegmentationOutput,
    declared_task,
    parse,
)
from gateway.pipelines.tabular import TabularClassificationPipeline, TabularRegressionPipeline
from gateway.pipelines.volumetric import VolumetricSegmentationPipeline

AICOCO, SEG, SR = "aicoco", "seg", "sr"


@dataclass(frozen=True)
class Task:
    spec: TaskSpec
    pipeline: Callable[[PipelineBinding, Any], Pipeline]
    """Made with the model's binding and its parsed parameters, once per configuration."""
    answers: frozenset[str]
    """The answers ``output=`` may ask for: AiCOCO always; a DICOM SEG or SR where a result on
    the source images makes sense."""

    @property
    def name(self) -> str:
        return self.spec.name


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            TaskSpec("classification", "image", ClassificationOutput, "categories"),
            ClassificationPipeline,
            frozenset({AICOCO, SR}),
        ),
        Task(
            TaskSpec("regression", "image", RegressionOutput, "regressions"),
            RegressionPipeline,
            frozenset({AICOCO, SR}),
        ),
        Task(
            TaskSpec("detection", "image", DetectionOutput, "categories"),
            DetectionPipeline,
            frozenset({AICOCO, SR}),
        ),
        Task(
            TaskSpec("segmentation", "image", SegmentationOutput, "categories"),
            SegmentationPipeline,
            frozenset({AICOCO, SEG, SR}),
        ),
        Task(
            TaskSpec("volumetric_segmentation", "volume", VolumeSegmentationOutput, "categories"),
            VolumetricSegmentationPipeline,
            frozenset({AICOCO, SEG, SR}),
        ),
        Task(
            TaskSpec("tabular_classification", "table", TabularClassificationOutput, "categories"),
            TabularClassificationPipeline,
            frozenset({AICOCO}),
        ),
        Task(
            TaskSpec("tabular_regression", "table", TabularRegressionOutput, "regressions"),
            TabularRegressionPipeline,
            frozenset({AICOCO}),
        ),
        Task(
            TaskSpec("hybrid_classification", "image+table", ClassificationOutput, "categories"),
            HybridPipeline,
            frozenset({AICOCO}),
        ),
        Task(
            TaskSpec("hybrid_regression", "image+table", RegressionOutput, "regressions"),
            HybridPipeline,
            frozenset({AICOCO}),
        ),
    )
}


def task_of(model: str, parameters: Mapping[str, str]) -> Task:
    """The task ``aicoco.task`` names, or the model's configuration error listing them all."""
    name = declared_task(parameters)
    task = TASKS.get(name)
    if task is None:
        _fail(model, f"must be one of {', '.join(TASKS)}, got {name!r}")
    return task


def parse_params(model: str, parameters: Mapping[str, str]) -> ModelParams[OutputSpec]:
    """The parameters of an image model (classification, regression, detection, segmentation)."""
    parsed = parse(model, parameters, task_of(model, parameters).spec)
    if not isinstance(parsed, ModelParams):
        _fail(model, f"names a {parsed.task} model, which does not take 2D images alone")
    return parsed


def parse_table_params(model: str, parameters: Mapping[str, str]) -> TableParams:
    """The parameters of a tabular or hybrid model."""
    parsed = parse(model, parameters, task_of(model, parameters).spec)
    if not isinstance(parsed, TableParams):
        _fail(model, f"names a {parsed.task} model, which takes no table")
    return parsed


def build(binding: PipelineBinding) -> Pipeline:
    """The built-in pipeline of the model's task, with its parameters parsed once, here; the
    pipeline checks the model's tensors against them."""
    task = task_of(binding.model_name, binding.config.parameters)
    params = parse(binding.model_name, binding.config.parameters, task.spec)
    return task.pipeline(binding, params)


def answers_of(task: str | None) -> frozenset[str] | None:
    """The answers a model of ``task`` may give; None for a task the registry does not know (a
    custom pipeline's), which the caller judges on its own."""
    found = TASKS.get(task or "")
    return found.answers if found is not None else None


def _fail(model: str, problem: str) -> NoReturn:
    raise InvalidModelConfig(
        f"model '{model}': parameter '{TASK}' {problem}",
        details={"model": model, "parameter": TASK},
    )
