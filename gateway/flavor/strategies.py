"""FLaVor's output strategies, by name and call, over the :mod:`aicoco` strategies.

FLaVor strategies take the categories as the dicts ``set_categories`` returns and make their own
ids; these take the same arguments and draw ids from the request's generator. The tabular ones
write the records to the gateway's artifact store (FLaVor's ``records_output_dir`` arguments are
accepted and ignored: ``RECORDS_DIR`` decides) and answer its ``records`` reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from aicoco import (
    AiCOCOFormatError,
    AiCOCOOutput,
    AiImage,
    ClassificationStrategy,
    DetectionStrategy,
    IdGenerator,
    OutputStrategy,
    RegressionStrategy,
    SegmentationStrategy,
    build_categories,
    build_regressions,
)
from aicoco.tables import (
    AiCOCOHybridOutput,
    AiCOCOTabularOutput,
    AiHybridImage,
    AiHybridMeta,
    AiTable,
    AiTableMeta,
    RecordBuilder,
)
from gateway.records import RecordsStore


@dataclass(frozen=True)
class Call:
    """What a strategy needs of the request it formats."""

    ids: IdGenerator
    records: RecordsStore


_call: ContextVar[Call | None] = ContextVar("flavor_call", default=None)


@contextlib.contextmanager
def calling(call: Call) -> Iterator[None]:
    token = _call.set(call)
    try:
        yield
    finally:
        _call.reset(token)


def _current() -> Call:
    call = _call.get()
    if call is None:
        raise RuntimeError("a FLaVor strategy is called outside a request the gateway serves")
    return call


class _ImageStrategy:
    strategy: OutputStrategy

    def __call__(
        self,
        model_out: Any,
        images: Sequence[AiImage | Mapping[str, Any]],
        categories: Sequence[Any] | None = None,
        regressions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> AiCOCOOutput:
        return self.strategy(
            model_out,
            images=[AiImage.model_validate(image) for image in images],
            categories=categories or (),
            regressions=regressions or (),
            ids=_current().ids,
        )


class AiCOCOClassificationOutputStrategy(_ImageStrategy):
    strategy = ClassificationStrategy()


class AiCOCORegressionOutputStrategy(_ImageStrategy):
    strategy = RegressionStrategy()


class AiCOCODetectionOutputStrategy(_ImageStrategy):
    strategy = DetectionStrategy()


class AiCOCOSegmentationOutputStrategy(_ImageStrategy):
    strategy = SegmentationStrategy()


class _TabularStrategy:
    kind: str

    def __call__(
        self,
        model_out: Any,
        tables: Sequence[AiTable | Mapping[str, Any]],
        dataframes: Sequence[Any],
        meta: Mapping[str, Any],
        categories: Sequence[Any] | None = None,
        regressions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> AiCOCOTabularOutput:
        call = _current()
        entries = [AiTable.model_validate(table) for table in tables]
        table_meta = AiTableMeta.model_validate(meta)
        window = table_meta.window_size
        cats = build_categories((categories or ()) if self.kind == "cls" else (), call.ids)
        regs = build_regressions((regressions or ()) if self.kind == "reg" else (), call.ids)
        out = np.asarray(model_out)
        offset = 0
        with call.records.writer() as writer:
            for table, frame in zip(entries, dataframes, strict=True):
                count = len(frame) // window
                builder = RecordBuilder(
                    table.id,
                    window,
                    categories=cats,
                    regressions=regs,
                    declared_categories=len(categories or ()) if self.kind == "cls" else None,
                    declared_regressions=len(regressions or ()) if self.kind == "reg" else None,
                    ids=call.ids,
                )
                part = out[offset : offset + count]
                if len(part) != count:
                    raise AiCOCOFormatError(
                        f"expected one model output per record ({offset + count} so far), got "
                        f"{len(out)}"
                    )
                writer.write(builder.lines(part), count)
                offset += count
            if offset != len(out):
                raise AiCOCOFormatError(
                    f"expected {offset} model outputs, one per record, got {len(out)}"
                )
        return AiCOCOTabularOutput(
            tables=entries,
            categories=cats,
            regressions=regs,
            records=writer.reference(),
            meta=table_meta,
        )


class AiCOCOTabularClassificationOutputStrategy(_TabularStrategy):
    kind = "cls"


class AiCOCOTabularRegressionOutputStrategy(_TabularStrategy):
    kind = "reg"


class _HybridStrategy:
    strategy: OutputStrategy

    def __call__(
        self,
        model_out: Any,
        images: Sequence[AiImage | Mapping[str, Any]],
        tables: Sequence[AiTable | Mapping[str, Any]],
        categories: Sequence[Any] | None = None,
        regressions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> AiCOCOHybridOutput:
        document = self.strategy(
            model_out,
            images=[AiImage.model_validate(image) for image in images],
            categories=categories or (),
            regressions=regressions or (),
            ids=_current().ids,
        )
        return AiCOCOHybridOutput(
            images=[AiHybridImage.model_validate(image.model_dump()) for image in document.images],
            tables=[AiTable.model_validate(table) for table in tables],
            categories=document.categories,
            regressions=document.regressions,
            meta=AiHybridMeta.model_validate(document.meta.model_dump()),
        )


class AiCOCOHybridClassificationOutputStrategy(_HybridStrategy):
    strategy = ClassificationStrategy()


class AiCOCOHybridRegressionOutputStrategy(_HybridStrategy):
    strategy = RegressionStrategy()
