"""The Python-based onnxruntime backend behind a real local Triton, over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from tests.triton_local.tiny_models import AFFINE_CONFIG, SCALE_CONFIG, affine_onnx, model_folder
from triton_local import LocalTriton
from triton_local.process import group_members

pytestmark = pytest.mark.e2e

Array = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_repository")
    model_folder(root, "affine", AFFINE_CONFIG)
    # Config accepts any image size, the graph only 4 x 4: the backend must say so.
    fixed = model_folder(root, "affine_fixed", AFFINE_CONFIG, onnx_file=None)
    affine_onnx(fixed / "1" / "model.onnx", height=4, width=4)
    model_folder(root, "scale", SCALE_CONFIG)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LocalTriton]:
    triton = LocalTriton(
        repository,
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        log_file=repository.parent / "tritonserver.log",
        require_all_models=True,
    )
    with triton:
        pgid = triton.pid
        yield triton
    assert pgid is not None and not group_members(pgid)


@pytest.fixture
def client(server: LocalTriton) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton_client:
        yield triton_client


def infer_input(name: str, array: Array, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def in_process(path: Path, feed: dict[str, Array]) -> list[Array]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feed))


def test_outputs_equal_onnxruntime_in_process(
    client: grpcclient.InferenceServerClient, repository: Path
) -> None:
    x = np.random.default_rng(1).normal(size=(3, 1, 5, 7)).astype(np.float32)
    result = client.infer("affine", [infer_input("x", x, "FP32")])
    expected_y, expected_s = in_process(repository / "affine" / "1" / "model.onnx", {"x": x})
    np.testing.assert_array_equal(result.as_numpy("y"), expected_y)
    np.testing.assert_array_equal(result.as_numpy("s"), expected_s)

    pixels = np.array([[0, 128, 255], [17, 34, 51]], np.uint8)
    result = client.infer("scale", [infer_input("pixels", pixels, "UINT8")])
    [expected] = in_process(repository / "scale" / "1" / "model.onnx", {"pixels": pixels})
    np.testing.assert_array_equal(result.as_numpy("scaled"), expected)


def test_only_requested_outputs_are_returned(client: grpcclient.InferenceServerClient) -> None:
    x = np.ones((1, 1, 2, 2), np.float32)
    result = client.infer(
        "affine", [infer_input("x", x, "FP32")], outputs=[grpcclient.InferRequestedOutput("s")]
    )
    assert [output.name for output in result.get_response().outputs] == ["s"]
    np.testing.assert_array_equal(result.as_numpy("s"), [[12.0]])


async def _concurrent(url: str, model: str, inputs: list[Array]) -> list[Array | str]:
    """Send all requests at once; each gives its ``y`` or its error message."""
    async with grpcaio.InferenceServerClient(url) as triton_client:

        async def one(x: Array) -> Array | str:
            tensor = grpcaio.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            try:
                result = await triton_client.infer(model, [tensor])
            except InferenceServerException as error:
                return str(error.message())
            y: Array = result.as_numpy("y")
            return y

        return list(await asyncio.gather(*(one(x) for x in inputs)))


def _executions(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    [stats] = client.get_inference_statistics(model, as_json=True)["model_stats"]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


@pytest.mark.anyio
async def test_dynamic_batch_runs_together_and_splits_back(
    server: LocalTriton, client: grpcclient.InferenceServerClient
) -> None:
    rng = np.random.default_rng(2)
    inputs = [rng.random((1 + i % 2, 1, 3, 3), dtype=np.float32) for i in range(6)]
    inferences_before, executions_before = _executions(client, "affine")

    outputs = await _concurrent(server.grpc_url, "affine", inputs)

    for x, y in zip(inputs, outputs, strict=True):
        assert isinstance(y, np.ndarray), y
        np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)
    inferences, executions = _executions(client, "affine")
    assert inferences - inferences_before == sum(len(x) for x in inputs)
    # Six requests queued within the batching window: fewer backend executions than requests.
    assert executions - executions_before < len(inputs)


@pytest.mark.anyio
async def test_a_bad_request_in_a_batch_fails_alone(server: LocalTriton) -> None:
    good = np.zeros((1, 1, 4, 4), np.float32)
    bad = np.zeros((1, 1, 5, 5), np.float32)

    outputs = await _concurrent(server.grpc_url, "affine_fixed", [good, bad, good])

    assert isinstance(outputs[0], np.ndarray) and isinstance(outputs[2], np.ndarray)
    np.testing.assert_array_equal(outputs[0], np.ones_like(good))
    assert outputs[1] == (
        "input 'x' has shape [1, 1, 5, 5]; the model expects [N, 1, 4, 4] where N is the batch size"
    )


def test_wrong_dtype_is_rejected_with_both_types(client: grpcclient.InferenceServerClient) -> None:
    x = np.zeros((1, 1, 2, 2), np.int32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("affine", [infer_input("x", x, "INT32")])
    assert "'INT32'" in caught.value.message()
    assert "expects 'FP32'" in caught.value.message()
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_wrong_rank_is_rejected_with_the_expected_shape(
    client: grpcclient.InferenceServerClient,
) -> None:
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("affine", [infer_input("x", x, "FP32")])
    assert "unexpected shape for input 'x'" in caught.value.message()
    assert "Expected [-1,1,-1,-1], got [1,2,4,4]" in caught.value.message()


def test_shape_only_the_graph_restricts_is_rejected_by_the_backend(
    client: grpcclient.InferenceServerClient,
) -> None:
    x = np.zeros((2, 1, 5, 5), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("affine_fixed", [infer_input("x", x, "FP32")])
    assert "the model expects [N, 1, 4, 4]" in caught.value.message()
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
