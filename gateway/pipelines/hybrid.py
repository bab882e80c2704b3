"""The built-in hybrid pipeline: each image with its patient's table rows, two Triton inputs.

Configured by ``aicoco.task`` ``hybrid_classification`` or ``hybrid_regression``, ``aicoco.input``
(the image, as for image models) and ``aicoco.table`` (the columns; ``window_size`` is the number
of rows each image's table holds). The model takes ``image`` FP32 ``[1, H, W]`` and ``features``
FP32 ``[window_size, columns]`` per image and answers ``probabilities`` or ``values``, which
become that image's ``category_ids`` or ``regressions``, as FLaVor's hybrid strategies write them.

Pairing follows FLaVor: each ``images`` entry names its table in ``table_ids`` (one table per
image), and every uploaded file is an image or a table that some entry names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aicoco import (
    AiImage,
    AiRegressionItem,
    build_categories,
    build_regressions,
)
from aicoco.tables import AiCOCOHybridOutput, AiHybridImage, AiHybridMeta, AiTable
from gateway.errors import (
    InvalidModelOutput,
    TableWindowMismatch,
    UnsupportedImage,
    WrongInputKind,
)
from gateway.inference import InferenceRequest
from gateway.pipelines import postprocessing as post
from gateway.pipelines.base import PipelineBinding
from gateway.pipelines.builtin import (
    check_answers,
    check_batched,
    check_no_other_inputs,
    check_tensor,
)
from gateway.pipelines.params import ClassificationOutput, RegressionOutput, TableParams
from gateway.pipelines.preprocessing import to_model_input
from gateway.pipelines.tabular import FEATURES, IMAGE, TableModel, parse_meta
from gateway.readers import read_images
from gateway.readers.tables import read_table


class HybridPipeline(TableModel):
    def __init__(self, binding: PipelineBinding, params: TableParams) -> None:
        assert params.input is not None
        super().__init__(binding, params)
        self.input = params.input
        config = binding.config
        check_tensor(config, IMAGE, "input", "FP32", (1, *self.input.size))
        check_batched(config, "images go in batches")
        features = (params.table.window_size, len(self.columns))
        check_tensor(config, FEATURES, "input", "FP32", features)
        check_answers(config, params)
        check_no_other_inputs(config, {IMAGE, FEATURES}, "a hybrid model")

    async def __call__(self, request: InferenceRequest) -> AiCOCOHybridOutput:
        pairs = self._pairs(request)
        meta = parse_meta(AiHybridMeta, request.fields.get("meta") or {})
        with request.stage("read"):
            images, features = await self.binding.cpu.run(self._inputs, request, pairs)
        with request.stage("triton"):
            out = await self.network.infer({IMAGE: images, FEATURES: features})
        values = out[self.vector]
        ids = request.ids
        categories = build_categories(self.categories, ids)
        regressions = build_regressions(self.regressions, ids)
        entries = [AiHybridImage.model_validate(image.model_dump()) for image, _ in pairs]
        width = len(self.categories or self.regressions)
        if values.shape != (len(entries), width):
            raise InvalidModelOutput(
                f"model '{self.model_name}' returned '{self.vector}' of shape "
                f"{list(values.shape)}; expected [{len(entries)}, {width}]",
                details={"model": self.model_name},
            )
        for entry, row in zip(entries, values, strict=True):
            if self.params.declares == "categories":
                spec = self.params.output
                assert isinstance(spec, ClassificationOutput)
                found = post.positive(row, spec.threshold)
                entry.category_ids = [
                    c.id for c, hit in zip(categories, found, strict=False) if hit
                ]
            else:
                spec_r = self.params.output
                assert isinstance(spec_r, RegressionOutput)
                values = post.reported(row, spec_r.scale, spec_r.offset)
                entry.regressions = [
                    AiRegressionItem(regression_id=r.id, value=float(v))
                    for r, v in zip(regressions, values, strict=False)
                ]
        return AiCOCOHybridOutput(
            images=sorted(entries, key=lambda image: image.index),
            tables=request.tables,
            categories=categories,
            regressions=regressions,
            meta=meta,
        )

    def _pairs(self, request: InferenceRequest) -> list[tuple[AiImage, AiTable]]:
        if not request.images or not request.tables:
            raise WrongInputKind(
                f"model '{self.model_name}' is a hybrid model: send 'images' entries, each "
                "with 'table_ids', and the 'tables' entries, with their files",
                details={"model": self.model_name},
            )
        return image_tables(request)

    def _inputs(
        self, request: InferenceRequest, pairs: Sequence[tuple[AiImage, AiTable]]
    ) -> tuple[np.ndarray, np.ndarray]:
        window = self.params.table.window_size
        images: list[np.ndarray] = []
        features: list[np.ndarray] = []
        for image, table in pairs:
            own = {image.file_name: request.uploads[image.file_name]}
            scan = read_images([image], own, self.binding.limits)
            if scan.pixels.shape[0] != 1:
                raise UnsupportedImage(
                    f"model '{self.model_name}' takes one 2D image per entry; "
                    f"{image.file_name!r} holds {scan.pixels.shape[0]} slices",
                    details={"file_name": image.file_name},
                )
            images.append(to_model_input(scan.pixels, hounsfield=scan.hounsfield, spec=self.input))
            rows = read_table(request.uploads[table.file_name], self.columns, self.binding.tables)
            if len(rows) != window:
                raise TableWindowMismatch(
                    f"the table {table.file_name!r} of image {image.id!r} has {len(rows)} data "
                    f"row(s); model '{self.model_name}' takes {window} per image",
                    details={"file_name": table.file_name, "rows": len(rows)},
                )
            features.append(rows[np.newaxis])
        return np.concatenate(images), np.concatenate(features)


def image_tables(request: InferenceRequest) -> list[tuple[AiImage, AiTable]]:
    """Each image entry, in ``index`` order, with the one table its ``table_ids`` names
    (FLaVor's hybrid models take one table per image)."""
    tables = {table.id: table for table in request.tables}
    pairs: list[tuple[AiImage, AiTable]] = []
    for image in sorted(request.images, key=lambda entry: entry.index):
        named = (image.model_extra or {}).get("table_ids")
        if not isinstance(named, list) or len(named) != 1 or named[0] not in tables:
            raise WrongInputKind(
                f"images entry {image.id!r}: table_ids must name exactly one of the tables "
                f"{sorted(tables)}, got {named!r}",
                details={"image_id": image.id},
            )
        pairs.append((image, tables[named[0]]))
    return pairs
