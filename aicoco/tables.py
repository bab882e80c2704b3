"""AiCOCO for tables: the table entries, the per-record results, and the two documents that
carry them (tabular, and hybrid: images with their patients' tables).

FLaVor's wire format, so that its clients work unchanged: a tabular answer does not embed its
records; it points at a JSON Lines artifact (``records.href``) holding one :class:`AiRecord` a
line, because a table of a million rows has a million records. :class:`RecordBuilder` turns
model outputs into those lines window by window, so that nothing holds every record at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import ConfigDict, Field

from aicoco._json import to_jsonable
from aicoco.errors import AiCOCOFormatError
from aicoco.ids import IdGenerator
from aicoco.models import (
    AiAnnotation,
    AiCategory,
    AiImage,
    AiMeta,
    AiModel,
    AiObject,
    AiRegression,
    AiRegressionItem,
    Id,
)
from aicoco.strategies.base import binary_values


class AiTable(AiModel):
    """A table entry: ``id`` and ``file_name``, paired with an uploaded file by exact name.
    Extras the client sends are echoed."""

    id: Id
    file_name: str


class AiTableMeta(AiModel):
    """The ``meta`` of a tabular request and answer.

    ``window_size`` consecutive rows make one record (1: one record per row); FLaVor's optional
    ``task_type`` and ``sample_id_column`` and any other key travel through unchanged.
    """

    window_size: Annotated[int, Field(ge=1)]


class AiHybridImage(AiImage):
    """An image entry of a hybrid request: ``table_ids`` name the tables of that image."""

    table_ids: list[str] | None = None


class AiHybridMeta(AiMeta):
    """Series-level results of a hybrid answer, and the tables that belong to the series."""

    table_ids: list[str] | None = None


class AiRecord(AiModel):
    """One record: the result for ``row_indexes`` (0-based data rows) of one table."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    table_id: Id
    row_indexes: list[int]
    category_ids: list[str] | None = None
    regressions: list[AiRegressionItem] | None = None


class AiRecords(AiModel):
    """Where the records are: a JSON Lines artifact, ``GET href``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["jsonl"] = "jsonl"
    href: str
    rows: Annotated[int, Field(ge=0)]
    """Records (lines) in the artifact."""
    bytes: Annotated[int, Field(ge=0)]


class AiCOCOTabularOutput(AiModel):
    """The answer to a tabular request."""

    model_config = ConfigDict(extra="forbid")

    tables: list[AiTable]
    categories: list[AiCategory] = Field(default_factory=list)
    regressions: list[AiRegression] = Field(default_factory=list)
    records: AiRecords
    meta: AiTableMeta

    def to_json_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, fallback=to_jsonable)


class AiCOCOHybridOutput(AiModel):
    """The answer to a hybrid request: an image document plus the tables it used."""

    model_config = ConfigDict(extra="forbid")

    images: list[AiHybridImage]
    tables: list[AiTable]
    annotations: list[AiAnnotation] = Field(default_factory=list)
    categories: list[AiCategory] = Field(default_factory=list)
    regressions: list[AiRegression] = Field(default_factory=list)
    objects: list[AiObject] = Field(default_factory=list)
    meta: AiHybridMeta = Field(default_factory=AiHybridMeta)

    def to_json_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, fallback=to_jsonable)


class RecordBuilder:
    """Turns model outputs for consecutive windows of one table into JSON Lines, batch by batch.

    Classification: ``model_out`` is ``(n, C)`` 0/1, C the declared categories (binary: one,
    multiclass: one-hot, multilabel: any number of ones). Regression: ``(n, R)`` values. Each
    call continues where the previous one stopped, so a table streams through in batches.
    """

    def __init__(
        self,
        table_id: str,
        window_size: int,
        *,
        categories: Sequence[AiCategory] = (),
        regressions: Sequence[AiRegression] = (),
        declared_categories: int | None = None,
        declared_regressions: int | None = None,
        ids: IdGenerator,
    ) -> None:
        if bool(declared_categories) == bool(declared_regressions):
            raise ValueError("a record builder is for categories or regressions, not both")
        self._table_id = table_id
        self._window = window_size
        self._category_ids = [c.id for c in categories[: declared_categories or 0]]
        self._regression_ids = [r.id for r in regressions[: declared_regressions or 0]]
        self._ids = ids
        self.records = 0

    def lines(self, model_out: Any) -> bytes:
        """The JSON Lines of the next ``len(model_out)`` windows."""
        array = np.asarray(model_out)
        width = len(self._category_ids) or len(self._regression_ids)
        if array.ndim == 1 and width == 1:
            array = array[:, np.newaxis]
        if array.ndim != 2 or array.shape[1] != width:
            kind = "category" if self._category_ids else "regression"
            raise AiCOCOFormatError(
                f"expected `model_out` of shape (records, {width}), one value per declared "
                f"{kind}, got {array.shape}"
            )
        ids = self._ids.take(len(array))
        first = self.records * self._window
        self.records += len(array)
        if self._category_ids:
            return self._classified(binary_values(array, "model_out"), ids, first)
        return self._regressed(array, ids, first)

    def _classified(self, hits: NDArray[np.bool_], ids: list[str], first: int) -> bytes:
        out: list[str] = []
        table = _quoted(self._table_id)
        names = [_quoted(i) for i in self._category_ids]
        for n, (row, record_id) in enumerate(zip(hits, ids, strict=True)):
            chosen = ",".join(name for name, hit in zip(names, row, strict=True) if hit)
            out.append(
                f'{{"id":"{record_id}","table_id":{table},"row_indexes":'
                f"{self._rows(first + n * self._window)},"
                f'"category_ids":[{chosen}],"regressions":null}}\n'
            )
        return "".join(out).encode()

    def _regressed(self, values: NDArray[Any], ids: list[str], first: int) -> bytes:
        as_float = values.astype(np.float64)
        if not np.isfinite(as_float).all():
            raise AiCOCOFormatError("expected finite regression values, got NaN or infinity")
        out: list[str] = []
        table = _quoted(self._table_id)
        names = [_quoted(i) for i in self._regression_ids]
        for n, (row, record_id) in enumerate(zip(as_float.tolist(), ids, strict=True)):
            items = ",".join(
                f'{{"regression_id":{name},"value":{value!r}}}'
                for name, value in zip(names, row, strict=True)
            )
            out.append(
                f'{{"id":"{record_id}","table_id":{table},"row_indexes":'
                f"{self._rows(first + n * self._window)},"
                f'"category_ids":null,"regressions":[{items}]}}\n'
            )
        return "".join(out).encode()

    def _rows(self, start: int) -> str:
        if self._window == 1:
            return f"[{start}]"
        return "[" + ",".join(str(i) for i in range(start, start + self._window)) + "]"


def _quoted(text: str) -> str:
    """A JSON string literal: table ids come from the client and may hold anything."""
    return json.dumps(text, ensure_ascii=False)
