"""The FLaVor-style stages: what each receives, in which order, and what the request records.

The pipelines here run an in-process numpy "network" (define_inference_network may return any
callable), so the stage plumbing is tested without a Triton; the real network handle is
exercised end to end in tests/e2e.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, Unpack

import numpy as np
import pytest

from aicoco import AiCOCOOutput, AiImage, CategorySpec, ClassificationStrategy, IdGenerator
from gateway.cpu_pool import CpuPool
from gateway.errors import FileMismatch, InternalError, InvalidModelOutput
from gateway.inference import InferenceRequest, Upload
from gateway.pipelines import (
    AiCOCOImagePipeline,
    PipelineBinding,
    TritonModel,
    binding_scope,
)
from gateway.pipelines import AiCOCOImagePipeline as BaseAiCOCOImageInferenceModel
from gateway.readers import ReadLimits
from gateway.readers.tables import TableLimits
from gateway.records import RecordsStore
from gateway.triton import ModelConfig, TritonClient

pytestmark = pytest.mark.anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@pytest.fixture
async def binding(tmp_path: Path) -> AsyncIterator[PipelineBinding]:
    """A binding whose Triton client is never contacted: the networks below run in-process (a
    gRPC channel needs a running loop, hence an async fixture)."""
    config = ModelConfig(name="toy", versions=("1",), max_batch_size=1, inputs=(), outputs=())
    client = TritonClient("127.0.0.1:1", 1.0)
    try:
        with CpuPool(1) as cpu:
            records = RecordsStore(tmp_path / "records", retention_s=60, max_bytes=1024)
            tables = TableLimits(1024, 10, 10, 10)
            yield PipelineBinding("toy", client, config, ReadLimits(10, 10), cpu, tables, records)
    finally:
        await client.close()


def request_for(tmp_path: Path, names: Sequence[tuple[str, int]]) -> InferenceRequest:
    uploads = {}
    for i, (name, _) in enumerate(names):
        path = tmp_path / f"{i:05d}.txt"
        path.write_text(name)
        uploads[name] = Upload(name, path, path.stat().st_size)
    images = [
        AiImage(id=f"id-{index}", file_name=name, index=index) for name, index in reversed(names)
    ]
    return InferenceRequest(
        request_id="r1",
        model_name="toy",
        images=images,
        uploads=uploads,
        fields={"meta": {"study": "s"}, "threshold": 0.5},
        ids=IdGenerator(seed=1),
    )


class Ported(BaseAiCOCOImageInferenceModel):
    """Written the FLaVor way: narrow signatures, a sync network call."""

    def __init__(self) -> None:
        self.formatter = ClassificationStrategy()
        super().__init__()

    def define_inference_network(self) -> Any:
        return lambda x: x.mean(axis=(1, 2)) > 0.5

    def set_categories(self) -> list[dict[str, Any]]:
        return [{"name": "bright"}, {"name": "dark", "display": False}]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, files: Sequence[str], **kwargs: Any) -> tuple[np.ndarray, None]:
        return np.array([[[len(Path(files[0]).read_text()) % 2]]], dtype=np.float32), None

    def preprocess(self, data: np.ndarray) -> np.ndarray:
        return np.concatenate([data, 1 - data], axis=0)

    def postprocess(self, out: np.ndarray) -> np.ndarray:
        return out.astype(np.uint8)

    def output_formatter(
        self,
        model_out: np.ndarray,
        images: Sequence[AiImage],
        categories: Sequence[CategorySpec],
        **kwargs: Any,
    ) -> AiCOCOOutput:
        return self.formatter(model_out=model_out, images=images, categories=categories)


async def test_a_flavor_style_model_runs_unchanged(
    tmp_path: Path, binding: PipelineBinding
) -> None:
    seen: list[str] = []
    request = request_for(tmp_path, [("a.png", 0)])  # "a.png": 5 characters -> bright
    request.observe = lambda stage, seconds: seen.append(stage)
    with binding_scope(binding):
        pipeline = Ported()
    output = await pipeline(request)
    assert seen == ["read", "preprocess", "triton", "postprocess", "format"]
    categories = {c.id: c.name for c in output.categories}
    assert [categories[c] for c in output.images[0].category_ids or []] == ["bright"]
    assert pipeline.categories[1].display is False


def test_constructing_outside_the_catalog_needs_a_binding() -> None:
    with pytest.raises(RuntimeError, match="binding"):
        Ported()
    with pytest.raises(RuntimeError, match="binding"):
        TritonModel("toy")


class Recording(AiCOCOImagePipeline):
    """Takes every keyword, async inference, reorders files like a 3D reader would."""

    def define_inference_network(self) -> Any:
        return None

    def set_categories(self) -> list[CategorySpec]:
        return [CategorySpec(name="c")]

    def set_regressions(self) -> None:
        return None

    def data_reader(
        self, files: Sequence[str], *, images: Sequence[AiImage], **kwargs: Any
    ) -> tuple[dict[str, Any], list[str]]:
        assert [image.index for image in images] == sorted(image.index for image in images)
        return {"files": list(files), "kwargs": sorted(kwargs)}, list(reversed(files))

    async def inference(self, x: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return x

    def postprocess(self, out: Any, *, data: Any) -> Any:
        assert out is data
        return np.zeros(1, dtype=np.uint8)

    def output_formatter(
        self, model_out: Any, *, images: Sequence[AiImage], data: Any, ids: IdGenerator
    ) -> dict[str, Any]:
        self.last = (list(images), data)
        return ClassificationStrategy()(
            model_out, images=images[:1], categories=self.categories, ids=ids
        ).model_dump()


async def test_stage_arguments_and_reordering(tmp_path: Path, binding: PipelineBinding) -> None:
    request = request_for(tmp_path, [("a.dcm", 2), ("b.dcm", 0), ("c.dcm", 1)])

    pipeline = Recording(binding)
    output = await pipeline(request)
    assert isinstance(output, AiCOCOOutput)
    images, data = pipeline.last
    paths = {name: str(upload.path) for name, upload in request.uploads.items()}
    # files in entry index order; fields reach data_reader as keywords.
    assert data["files"] == [paths["b.dcm"], paths["c.dcm"], paths["a.dcm"]]
    assert data["kwargs"] == ["meta", "threshold", "uploads"]
    # modified_files (reversed) reorder the entries handed to output_formatter, as in FLaVor.
    assert [image.file_name for image in images] == ["a.dcm", "c.dcm", "b.dcm"]


@pytest.mark.parametrize("field", ["self", "fn", "files", "x", "args", "kwargs"])
async def test_a_field_named_like_a_parameter_cannot_collide(
    tmp_path: Path, binding: PipelineBinding, field: str
) -> None:
    """An extra form field reaches ``**kwargs`` stages as a keyword: one named like the stage
    caller's or the stage's own positional parameters (``self``, ``fn``) was a TypeError, a 500.
    """
    request = request_for(tmp_path, [("a.dcm", 0)])
    request.fields[field] = "client's value"

    pipeline = Recording(binding)
    output = await pipeline(request)
    assert isinstance(output, AiCOCOOutput)
    _, data = pipeline.last
    expected = {"meta", "threshold", "uploads"} | (
        {field} if field in {"fn", "x", "args", "kwargs"} else set()
    )
    assert set(data["kwargs"]) == expected - {"files"}


async def test_files_and_entries_must_pair_up(tmp_path: Path, binding: PipelineBinding) -> None:
    request = request_for(tmp_path, [("a.dcm", 0)])
    request.images.append(AiImage(id="x", file_name="missing.dcm", index=1))

    with pytest.raises(FileMismatch, match=r"missing\.dcm"):
        await Recording(binding)(request)


class BadReader(Recording):
    def data_reader(self, files: Sequence[str], **kwargs: Any) -> Any:
        return "not a tuple"


async def test_a_data_reader_must_return_data_and_files(
    tmp_path: Path, binding: PipelineBinding
) -> None:
    with pytest.raises(InternalError, match=r"data_reader must return \(data"):
        await BadReader(binding)(request_for(tmp_path, [("a.dcm", 0)]))


class BadCategories(Recording):
    def set_categories(self) -> list[Any]:
        return [{"label": "no name"}]


async def test_invalid_categories_are_reported_at_construction(binding: PipelineBinding) -> None:
    with pytest.raises(InternalError, match="set_categories"):
        BadCategories(binding)


class WrongChannels(Ported):
    def postprocess(self, out: np.ndarray) -> np.ndarray:
        return np.ones(3, dtype=np.uint8)


async def test_output_the_strategy_refuses_is_an_invalid_model_output(
    tmp_path: Path, binding: PipelineBinding
) -> None:
    with binding_scope(binding):
        pipeline = WrongChannels()
    with pytest.raises(InvalidModelOutput, match=r"model 'toy'.*shape \(2,\)"):
        await pipeline(request_for(tmp_path, [("a.png", 0)]))


class CountingPool(CpuPool):
    """Counts the hand-offs to the worker pool."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.calls = 0

    async def run(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        self.calls += 1
        return await super().run(fn, *args)


async def counted_run(
    tmp_path: Path, binding: PipelineBinding, make: Callable[[], AiCOCOImagePipeline]
) -> tuple[int, list[str], AiCOCOOutput | Exception]:
    """Pool hand-offs, stages seen and the answer (or the error) of one request."""
    seen: list[str] = []
    request = request_for(tmp_path, [("a.png", 0)])
    request.observe = lambda stage, seconds: seen.append(stage)
    pool = CountingPool(1)
    with pool:
        with binding_scope(replace(binding, cpu=pool)):
            pipeline = make()
        try:
            answer: AiCOCOOutput | Exception = await pipeline(request)
        except Exception as exc:
            answer = exc
    return pool.calls, seen, answer


async def test_consecutive_plain_stages_share_one_pool_call(
    tmp_path: Path, binding: PipelineBinding
) -> None:
    """read + preprocess in one call, postprocess + format in another: 2, not 4."""
    calls, seen, output = await counted_run(tmp_path, binding, Ported)
    assert calls == 2
    assert seen == ["read", "preprocess", "triton", "postprocess", "format"]
    assert isinstance(output, AiCOCOOutput) and output.images[0].category_ids


class AsyncStages(AiCOCOImagePipeline):
    """Reader and formatter written ``async def`` (they run on the event loop), the others
    plain; the formatter answers one value too many, which the strategy refuses."""

    def define_inference_network(self) -> Any:
        return lambda x: x

    def set_categories(self) -> list[dict[str, Any]]:
        return [{"name": "bright"}, {"name": "dark"}]

    def set_regressions(self) -> None:
        return None

    async def data_reader(self, files: Sequence[str], **kwargs: Any) -> tuple[np.ndarray, None]:
        await asyncio.sleep(0)
        return np.ones(2, dtype=np.uint8), None

    def postprocess(self, out: np.ndarray) -> np.ndarray:
        return np.concatenate([out, out[:1]])

    async def output_formatter(
        self, model_out: np.ndarray, *, images: Sequence[AiImage], **kwargs: Any
    ) -> AiCOCOOutput:
        await asyncio.sleep(0)
        return ClassificationStrategy()(model_out, images=images, categories=self.categories)


async def test_async_stages_run_on_the_loop_and_keep_their_errors(
    tmp_path: Path, binding: PipelineBinding
) -> None:
    calls, seen, error = await counted_run(tmp_path, binding, AsyncStages)
    assert isinstance(error, InvalidModelOutput)
    assert re.search(r"model 'toy'.*shape \(2,\), one 0/1", error.message)
    # preprocess and postprocess (plain) each alone between async stages: one call each.
    assert calls == 2
    assert seen == ["read", "preprocess", "triton", "postprocess", "format"]
