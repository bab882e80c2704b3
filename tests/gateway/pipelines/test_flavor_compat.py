"""The FLaVor compatibility layer's refusals: each says what to change."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.cpu_pool import CpuPool
from gateway.errors import InternalError
from gateway.flavor import (
    AiCOCOHybridClassificationOutputStrategy,
    AiCOCOImageInputDataModel,
    AiCOCOTabularInputDataModel,
    AiImage,
    AiTable,
    BaseAiCOCOHybridInferenceModel,
    BaseAiCOCOImageInferenceModel,
    InferAPP,
    TritonSession,
)
from gateway.flavor.adapter import FlavorPipeline
from gateway.inference import InferenceRequest, Upload
from gateway.pipelines.base import PipelineBinding
from gateway.readers import ReadLimits
from gateway.readers.tables import TableLimits
from gateway.records import RecordsStore
from gateway.triton import ModelConfig, TritonClient


class Model(BaseAiCOCOImageInferenceModel):
    def __init__(self, network: Any = None) -> None:
        self._network = TritonSession("lesion_classifier") if network is None else network
        super().__init__()

    def define_inference_network(self) -> Any:
        return self._network

    def set_categories(self) -> list[dict[str, Any]]:
        return [{"name": "nodule"}]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, files: Sequence[str], **kwargs: Any) -> tuple[Any, None]:
        return files, None

    def output_formatter(self, model_out: Any, **kwargs: Any) -> Any:
        return model_out


def test_infer_app_serves_the_model_its_network_names() -> None:
    app = InferAPP(infer_function=Model(), input_data_model=AiCOCOImageInputDataModel)
    assert app.model_name == "lesion_classifier"
    assert app.settings(port=9999).default_model == "lesion_classifier"
    assert list(app.pipelines()) == ["lesion_classifier"]


def test_infer_app_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(TypeError, match=r"subclass of gateway\.flavor"):
        InferAPP(infer_function=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is for tabular models"):
        InferAPP(infer_function=Model(), input_data_model=AiCOCOTabularInputDataModel)
    with pytest.raises(TypeError, match=r"must return TritonSession\("):
        InferAPP(infer_function=Model(network=object()))


def test_a_session_used_before_the_gateway_attached_it_says_so() -> None:
    with pytest.raises(InternalError, match="before the gateway attached it"):
        TritonSession("m").run(None, {})


async def test_a_blocking_run_on_the_event_loop_is_refused() -> None:
    session = TritonSession("m")
    client = TritonClient("127.0.0.1:1", 1.0)
    try:
        session.attach(client, asyncio.get_running_loop())
        with pytest.raises(InternalError, match="called on the event loop"):
            session.run(None, {"image": 0})
    finally:
        await client.close()


def test_several_workers_are_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """InferAPP's instance lives in one process: WORKERS=2 stops it at once, saying why."""
    monkeypatch.setenv("WORKERS", "2")
    monkeypatch.setenv("TRITON_URL", "127.0.0.1:1")
    with pytest.raises(SystemExit) as stopped:
        InferAPP(infer_function=Model()).run(port=9999)
    assert stopped.value.code == 2
    assert "WORKERS=2" in capsys.readouterr().err


class Hybrid(BaseAiCOCOHybridInferenceModel):
    """Records what its data_reader is given; its network is never called."""

    def __init__(self) -> None:
        self.read: list[tuple[list[str], list[str]]] = []
        super().__init__()

    def define_inference_network(self) -> Any:
        return TritonSession("toy")

    def set_categories(self) -> list[dict[str, Any]]:
        return [{"name": "refer"}]

    def set_regressions(self) -> None:
        return None

    def data_reader(
        self, image_files: Sequence[str], table_files: Sequence[str], **kwargs: Any
    ) -> Any:
        self.read.append((list(image_files), list(table_files)))
        return len(image_files)

    def inference(self, x: Any) -> Any:
        return np.ones((x, 1), dtype=np.int64)

    def output_formatter(self, model_out: Any, **kwargs: Any) -> Any:
        return AiCOCOHybridClassificationOutputStrategy()(model_out=model_out[0], **kwargs)


async def test_each_hybrid_image_gets_its_table_file_even_when_they_share_one(
    tmp_path: Path,
) -> None:
    """FLaVor gives data_reader one table file per image: two images of one patient with one
    table get that table twice, in step with the images."""
    uploads = {}
    for name in ("a.png", "b.png", "patient.csv"):
        (tmp_path / name).write_bytes(b"x")
        uploads[name] = Upload(name, tmp_path / name, 1)
    images = [
        AiImage(id=f"i{n}", file_name=name, index=n, table_ids=["t"])
        for n, name in enumerate(("a.png", "b.png"))
    ]
    request = InferenceRequest(
        request_id="r",
        model_name="toy",
        images=images,
        uploads=uploads,
        tables=[AiTable(id="t", file_name="patient.csv")],
    )
    config = ModelConfig(name="toy", versions=("1",), max_batch_size=1, inputs=(), outputs=())
    client = TritonClient("127.0.0.1:1", 1.0)
    model = Hybrid()
    try:
        with CpuPool(1) as cpu:
            records = RecordsStore(tmp_path / "records", retention_s=60, max_bytes=1024)
            binding = PipelineBinding(
                "toy", client, config, ReadLimits(10, 10), cpu, TableLimits(9, 9, 9, 9), records
            )
            await FlavorPipeline(model, binding)(request)
    finally:
        await client.close()
    ((image_files, table_files),) = model.read
    assert image_files == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert table_files == [str(tmp_path / "patient.csv")] * 2
