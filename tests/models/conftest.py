"""Fixtures for the example models: their folders, held-out records and a way to run them.

``infer`` runs a model by name on an ``(N, 1, S, S)`` batch and is parametrised over two
back ends: ONNX Runtime in this process, and the real local Triton over gRPC (those cases are
end-to-end tests and get Triton from the session fixture ``triton`` of tests/conftest.py).
The same checks therefore hold for the file on disk and for the model as Triton serves it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from training.cards import CARDS

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"

Outputs = dict[str, npt.NDArray[Any]]
Infer = Callable[[str, npt.NDArray[np.float32]], Outputs]


def _chunked(
    run: Callable[[str, npt.NDArray[np.float32]], Outputs],
) -> Infer:
    """Split a batch by the model's ``max_batch_size`` and concatenate the outputs."""

    def infer(model: str, images: npt.NDArray[np.float32]) -> Outputs:
        step = CARDS[model].max_batch_size
        parts = [run(model, images[i : i + step]) for i in range(0, images.shape[0], step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    return infer


@pytest.fixture(scope="session")
def records() -> dict[str, dict[str, Any]]:
    """Each model's metrics.json: the held-out figures its README quotes."""
    return {name: json.loads((REPOSITORY / name / "metrics.json").read_text()) for name in CARDS}


@pytest.fixture(scope="session")
def onnx_sessions() -> dict[str, ort.InferenceSession]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return {
        name: ort.InferenceSession(
            str(REPOSITORY / name / "1" / "model.onnx"),
            options,
            providers=["CPUExecutionProvider"],
        )
        for name in CARDS
    }


def _onnx_infer(sessions: dict[str, ort.InferenceSession]) -> Infer:
    def run(model: str, images: npt.NDArray[np.float32]) -> Outputs:
        session = sessions[model]
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, {"image": images}), strict=True))

    return _chunked(run)


def _triton_infer(grpc_url: str) -> Iterator[Infer]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=grpc_url)

    def run(model: str, images: npt.NDArray[np.float32]) -> Outputs:
        tensor = grpcclient.InferInput("image", list(images.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        names = [output.name for output in CARDS[model].outputs]
        requested = [grpcclient.InferRequestedOutput(name) for name in names]
        result = client.infer(model, [tensor], outputs=requested)
        return {name: result.as_numpy(name) for name in names}

    try:
        yield _chunked(run)
    finally:
        client.close()


@pytest.fixture(params=["onnxruntime", pytest.param("triton", marks=pytest.mark.e2e)])
def infer(
    request: pytest.FixtureRequest, onnx_sessions: dict[str, ort.InferenceSession]
) -> Iterator[Infer]:
    if request.param == "onnxruntime":
        yield _onnx_infer(onnx_sessions)
    else:
        triton = request.getfixturevalue("triton")
        yield from _triton_infer(triton.grpc_url)
