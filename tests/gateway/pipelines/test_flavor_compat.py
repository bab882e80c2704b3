"""The FLaVor compatibility layer's refusals: each says what to change."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from gateway.errors import InternalError
from gateway.flavor import (
    AiCOCOImageInputDataModel,
    AiCOCOTabularInputDataModel,
    BaseAiCOCOImageInferenceModel,
    InferAPP,
    TritonSession,
)
from gateway.triton import TritonClient


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
