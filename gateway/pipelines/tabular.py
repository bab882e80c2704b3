"""The built-in tabular pipelines: a table in, one record per window of rows, records streamed
to an artifact.

Configured by ``aicoco.task`` ``tabular_classification`` or ``tabular_regression`` and
``aicoco.table`` (the columns, their order and types, ``window_size``). The model takes
``features`` FP32 ``[window_size, columns]`` per record and answers ``probabilities``
``[categories]`` or ``values`` ``[regressions]``.

A table goes to Triton in chunks of rows as it is read, and each chunk's records are written to
the artifact as soon as Triton answers, while the next chunk is being parsed: the gateway holds
one or two chunks, never the table or its results, so a table of a million rows needs a few
megabytes.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from aicoco import CategorySpec, RegressionSpec, build_categories, build_regressions
from aicoco.errors import AiCOCOFormatError
from aicoco.tables import AiCOCOTabularOutput, AiTable, AiTableMeta, RecordBuilder
from gateway.errors import (
    InvalidAiCOCO,
    InvalidModelOutput,
    TableWindowMismatch,
    WrongInputKind,
)
from gateway.inference import InferenceRequest
from gateway.pipelines import postprocessing as post
from gateway.pipelines.base import PipelineBinding, TritonModel
from gateway.pipelines.builtin import (
    check_answers,
    check_batched,
    check_no_other_inputs,
    check_tensor,
)
from gateway.pipelines.params import (
    TableParams,
    TabularClassificationOutput,
    TabularRegressionOutput,
)
from gateway.readers.tables import CHUNK_ROWS, TableLimits, TableReader, no_rows
from gateway.records import RecordsWriter

FEATURES = "features"
IMAGE = "image"


class TableModel:
    """What the tabular and the hybrid pipelines take from their binding and parameters: the
    model, its table's columns, what it answers."""

    def __init__(self, binding: PipelineBinding, params: TableParams) -> None:
        self.binding = binding
        self.params = params
        self.task = params.task
        self.vector = params.vector
        self.network = TritonModel(binding.model_name, client=binding.triton)
        self.categories: list[CategorySpec] = list(params.categories)
        self.regressions: list[RegressionSpec] = list(params.regressions)
        self.columns = params.table.reader_columns()

    @property
    def model_name(self) -> str:
        return self.binding.model_name


class TabularPipeline(TableModel, abc.ABC):
    """Shared by both tasks: read, window, infer, write records. Subclasses turn one batch of
    model outputs into the array :class:`~aicoco.tables.RecordBuilder` takes."""

    def __init__(self, binding: PipelineBinding, params: TableParams) -> None:
        super().__init__(binding, params)
        self.records = binding.records
        config = binding.config
        check_tensor(
            config, FEATURES, "input", "FP32", (params.table.window_size, len(self.columns))
        )
        check_batched(config, "records go in batches")
        check_answers(config, params)
        check_no_other_inputs(config, {FEATURES}, "a tabular model")

    @property
    def table_limits(self) -> TableLimits:
        return self.binding.tables

    async def __call__(self, request: InferenceRequest) -> AiCOCOTabularOutput:
        if request.images or not request.tables:
            raise WrongInputKind(
                f"model '{self.model_name}' is a {self.task} model: send 'tables' entries and "
                "their table files, and no 'images'",
                details={"model": self.model_name},
            )
        meta = table_meta(request.fields.get("meta"))
        window = self.params.table.window_size
        if meta.window_size != window:
            raise TableWindowMismatch(
                f"meta.window_size is {meta.window_size}; model '{self.model_name}' takes "
                f"windows of {window} row(s)",
                details={"model": self.model_name, "window_size": window},
            )
        ids = request.ids
        categories = build_categories(self.categories, ids)
        regressions = build_regressions(self.regressions, ids)
        cpu = self.binding.cpu
        writer = self.records.open()  # only creates the file: on the loop, so it cannot leak
        try:
            for table in request.tables:
                builder = RecordBuilder(
                    table.id,
                    window,
                    categories=categories,
                    regressions=regressions,
                    declared_categories=len(self.categories) or None,
                    declared_regressions=len(self.regressions) or None,
                    ids=ids,
                )
                with request.stage("triton"):
                    await self._table(request, table, builder, writer)
        except BaseException:
            # Synchronous: it must run while the task is being cancelled (a client that hung up).
            writer.discard()
            raise
        await cpu.run(writer.commit)
        return AiCOCOTabularOutput(
            tables=request.tables,
            categories=categories,
            regressions=regressions,
            records=writer.reference(),
            meta=meta,
        )

    async def _table(
        self,
        request: InferenceRequest,
        table: AiTable,
        builder: RecordBuilder,
        writer: RecordsWriter,
    ) -> None:
        """One table, chunk by chunk: chunk k+1 is parsed while Triton answers chunk k."""
        cpu = self.binding.cpu
        upload = request.uploads[table.file_name]
        window = self.params.table.window_size
        rows = max(window, CHUNK_ROWS - CHUNK_ROWS % window)
        reader = await cpu.run(TableReader, upload, self.columns, self.table_limits)
        try:
            pending: asyncio.Future[Any] = asyncio.ensure_future(cpu.run(reader.read, rows))
            while True:
                chunk = await pending
                if chunk is None:
                    break
                pending = asyncio.ensure_future(cpu.run(reader.read, rows))
                if len(chunk) % window:
                    self._partial_window(reader, window)
                out = await self.network.infer(
                    {FEATURES: chunk.reshape(-1, window, chunk.shape[1])}
                )
                await cpu.run(self._write, builder, writer, out)
            if reader.rows == 0:
                raise no_rows(reader.file_name)
        finally:
            # The read in progress runs on a thread that cannot be stopped: let it end before
            # the file closes under it, and take its outcome (its error, if any, is superseded).
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()
            reader.close()

    def _write(
        self, builder: RecordBuilder, writer: RecordsWriter, out: Mapping[str, np.ndarray]
    ) -> None:
        values = out[self.vector]
        try:
            lines = builder.lines(self.decide(values))
        except AiCOCOFormatError as exc:
            raise InvalidModelOutput(
                f"the output of model '{self.model_name}': {exc}",
                details={"model": self.model_name},
            ) from None
        writer.write(lines, len(values))

    @abc.abstractmethod
    def decide(self, values: np.ndarray) -> np.ndarray:
        """A batch's ``vector`` output -> 0/1 per category, or the reported values."""

    def _partial_window(self, reader: TableReader, window: int) -> NoReturn:
        raise TableWindowMismatch(
            f"the table {reader.file_name!r} has {reader.rows} data rows, not a multiple of "
            f"window_size {window}: each record takes {window} consecutive rows",
            details={"file_name": reader.file_name, "rows": reader.rows, "window_size": window},
        )


class TabularClassificationPipeline(TabularPipeline):
    def decide(self, values: np.ndarray) -> np.ndarray:
        spec = self.params.output
        assert isinstance(spec, TabularClassificationOutput)
        if spec.mode == "argmax":
            hits = np.zeros(values.shape, dtype=bool)
            hits[np.arange(len(values)), values.argmax(axis=1)] = True
            return hits
        return post.positive(values, spec.threshold)


class TabularRegressionPipeline(TabularPipeline):
    def decide(self, values: np.ndarray) -> np.ndarray:
        spec = self.params.output
        assert isinstance(spec, TabularRegressionOutput)
        return post.reported(values, spec.scale, spec.offset)


def table_meta(raw: Any) -> AiTableMeta:
    """The request's ``meta`` of a tabular request: ``window_size`` required, as in FLaVor."""
    if raw is None:
        raise InvalidAiCOCO(
            "a tabular request needs a 'meta' field such as {\"window_size\": 1}",
            details={"field": "meta"},
        )
    return parse_meta(AiTableMeta, raw, " (window_size is a whole number of rows, at least 1)")


M = TypeVar("M", bound=BaseModel)


def parse_meta(kind: type[M], raw: Any, hint: str = "") -> M:
    """The request's ``meta`` as ``kind``, or InvalidAiCOCO naming the first problem."""
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InvalidAiCOCO(
            f"invalid meta: {where or 'meta'}: {error['msg']}{hint}", details={"field": "meta"}
        ) from None
