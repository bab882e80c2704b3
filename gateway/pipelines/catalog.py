"""Which pipeline serves which model, built from what Triton says and cached until that changes.

A pipeline is built from the model's configuration (read over gRPC, so the gateway and Triton
share no filesystem) and cached per model name together with that configuration. The Triton
client re-reads a configuration at most every few seconds (and at once after Triton reports the
model gone or failing); when the versions or the configuration differ from the cached ones, the
pipeline is rebuilt. A reload that changes only the weights keeps the pipeline, which depends on
nothing else.

Custom pipelines come from ``PIPELINES`` (``model=package.module:Class``). They are imported
and checked when the catalog is created, at start, so a typo stops the gateway with a message
naming the variable instead of failing the first request.
"""

from __future__ import annotations

import asyncio
import inspect
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from gateway.cpu_pool import CpuPool
from gateway.errors import (
    ApiError,
    InternalError,
    InvalidModelConfig,
    ModelError,
    ModelNotFound,
    ModelNotReady,
    TritonTimeout,
    TritonUnavailable,
)
from gateway.inference import Pipeline
from gateway.pipelines import tasks
from gateway.pipelines.base import AiCOCOImagePipeline, PipelineBinding, binding_scope
from gateway.pipelines.hybrid import HybridPipeline
from gateway.pipelines.params import has_aicoco_parameters
from gateway.pipelines.tabular import TabularPipeline
from gateway.pipelines.volumetric import VolumetricSegmentationPipeline
from gateway.readers import ReadLimits
from gateway.readers.tables import TableLimits
from gateway.records import RecordsStore
from gateway.schemas import ModelInfo
from gateway.settings import Settings, SettingsError
from gateway.triton import ModelConfig, ModelState, TritonClient

READY = "READY"

DESCRIBE_RAISES: tuple[type[ApiError], ...] = (TritonUnavailable, TritonTimeout, ModelError)
"""What :meth:`ModelCatalog.describe` raises: the repository index's failures (a model's own
failure is its ``reason`` in the list)."""
LOOKUP_RAISES: tuple[type[ApiError], ...] = (
    *DESCRIBE_RAISES,
    ModelNotFound,
    ModelNotReady,
    InvalidModelConfig,
    InternalError,
)
"""What :meth:`ModelCatalog.pipeline` raises: Triton's answer about the model, a configuration
no pipeline can be built from, a custom pipeline that fails to start."""

Factories = Mapping[str, Callable[[PipelineBinding], Pipeline]]
"""Pipelines made from their binding by the program embedding the gateway (FLaVor's
``InferAPP``), by model name; they take precedence over ``PIPELINES`` and the built-in ones."""


@dataclass(frozen=True)
class _Entry:
    config: ModelConfig
    pipeline: Pipeline


class ModelCatalog:
    """Pipelines by model name; one instance per app, shared by all requests."""

    def __init__(
        self,
        triton: TritonClient,
        settings: Settings,
        cpu: CpuPool,
        records: RecordsStore | None = None,
        factories: Factories | None = None,
    ) -> None:
        self._triton = triton
        self._cpu = cpu
        self._limits = ReadLimits.of(settings)
        self._tables = TableLimits.of(settings)
        self._records = records if records is not None else RecordsStore.of(settings)
        self._targets = dict(settings.pipelines)
        self._custom = {model: load_pipeline_class(model, t) for model, t in self._targets.items()}
        self._factories = dict(factories or {})
        self._entries: dict[str, _Entry] = {}
        self._building: dict[str, asyncio.Lock] = {}

    async def pipeline(self, name: str) -> Pipeline:
        """The pipeline for ``name``; ModelNotFound, ModelNotReady or InvalidModelConfig if none.

        Per request this is a dictionary lookup: the configuration comes from the client's cache.
        """
        config = await self._triton.model_config(name)
        entry = self._entries.get(name)
        if entry is not None and (entry.config is config or entry.config == config):
            return entry.pipeline
        async with self._building.setdefault(name, asyncio.Lock()):
            entry = self._entries.get(name)
            if entry is not None and (entry.config is config or entry.config == config):
                return entry.pipeline
            pipeline = await self._cpu.run(self._build, name, config)
            self._entries[name] = _Entry(config, pipeline)
            return pipeline

    def _build(self, name: str, config: ModelConfig) -> Pipeline:
        binding = PipelineBinding(
            name, self._triton, config, self._limits, self._cpu, self._tables, self._records
        )
        factory = self._factories.get(name)
        if factory is not None:
            return factory(binding)
        custom = self._custom.get(name)
        if custom is None:
            if not has_aicoco_parameters(config.parameters):
                raise InvalidModelConfig(
                    f"model '{name}' has no aicoco.* parameters in its config.pbtxt and no "
                    "custom pipeline in PIPELINES; add aicoco.task, aicoco.categories, "
                    "aicoco.input (see the README) or name a pipeline class for it",
                    details={"model": name},
                )
            return tasks.build(binding)
        try:
            with binding_scope(binding):
                instance: Pipeline = custom()
        except ApiError:
            raise
        except Exception as exc:
            raise InternalError(
                f"the pipeline {self._targets[name]} of model '{name}' failed to start: "
                f"{type(exc).__name__}: {exc}",
                details={"model": name},
            ) from exc
        return instance

    async def describe(self) -> list[ModelInfo]:
        """Every model in Triton's repository (and every custom pipeline's model), by name."""
        states: dict[str, list[ModelState]] = {name: [] for name in self._custom}
        for state in await self._triton.repository_index():
            states.setdefault(state.name, []).append(state)
        infos = await asyncio.gather(*(self._describe(n, s) for n, s in sorted(states.items())))
        return list(infos)

    async def _describe(self, name: str, states: list[ModelState]) -> ModelInfo:
        info = ModelInfo(
            name=name,
            versions=sorted({s.version for s in states if s.version}, key=_version_key),
            state=_overall_state(states),
            reason="; ".join(s.reason for s in states if s.reason) or None,
            pipeline=self._targets.get(name)
            or ("embedded" if name in self._factories else "builtin"),
        )
        if not states:
            info.reason = "not in Triton's model repository"
            return info
        if info.state != READY:
            return info
        try:
            pipeline = await self.pipeline(name)
        except ApiError as exc:
            info.reason = exc.message
            info.task = await self._declared_task(name)
            return info
        info.ready = True
        info.task = await self._declared_task(name)
        if isinstance(pipeline, AiCOCOImagePipeline | TabularPipeline | HybridPipeline):
            info.task = pipeline.task or info.task
            info.categories = [_dump(c) for c in pipeline.categories]
            info.regressions = [_dump(r) for r in pipeline.regressions]
        if isinstance(pipeline, TabularPipeline | HybridPipeline):
            info.table = pipeline.params.table.model_dump(mode="json")
        if isinstance(pipeline, VolumetricSegmentationPipeline):
            params = pipeline.params
            info.volume = {
                **params.input.model_dump(mode="json"),
                "sliding_window": params.window.model_dump(mode="json"),
            }
        return info

    async def _declared_task(self, name: str) -> str | None:
        """The task a model's parameters name even when its pipeline cannot be built."""
        try:
            config = await self._triton.model_config(name)
        except ApiError:
            return None
        task = config.parameters.get("aicoco.task", "").strip()
        return task or None


def load_pipeline_class(model: str, target: str) -> type[Any]:
    """Import ``package.module:Class`` for ``model``; SettingsError naming PIPELINES if wrong."""
    module_name, sep, attribute = target.partition(":")
    where = f"PIPELINES entry {model}={target}"
    if not sep or not module_name or not attribute:
        raise SettingsError(f"{where}: expected package.module:Class")
    try:
        found: Any = pkgutil.resolve_name(target)
    except AttributeError as exc:
        if module_name not in sys.modules:  # raised while importing the module, not after
            raise SettingsError(f"{where}: cannot import {module_name}: {exc}") from exc
        raise SettingsError(f"{where}: {module_name} has no attribute {attribute}") from None
    except Exception as exc:
        raise SettingsError(f"{where}: cannot import {module_name}: {exc}") from exc
    if not inspect.isclass(found):
        raise SettingsError(f"{where}: {attribute} is not a class")
    if inspect.isabstract(found):
        missing = ", ".join(sorted(getattr(found, "__abstractmethods__", ())))
        raise SettingsError(f"{where}: {attribute} leaves stages unimplemented: {missing}")
    call = getattr(found, "__call__", None)  # noqa: B004 - the class's own method, not callable()
    if not inspect.iscoroutinefunction(call):
        raise SettingsError(
            f"{where}: {attribute} must define `async def __call__(self, request)` "
            "(subclass gateway.pipelines.AiCOCOImagePipeline)"
        )
    return found


def _overall_state(states: list[ModelState]) -> str:
    if any(s.state == READY for s in states):
        return READY
    return next((s.state for s in states if s.state), "")


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def _dump(spec: BaseModel) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_none=True)
