"""The Triton client without a Triton: input checks, error mapping, batch reassembly.

The happy paths (metadata discovery, batching against the dynamic batcher) run against a real
Triton in tests/e2e; here a stand-in gRPC client (passed as ``grpc=``) is used only to produce
the failures that a healthy server will not (a model failing on the third batch), and a closed
port stands for a Triton that is down.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from gateway.errors import (
    InternalError,
    InvalidModelOutput,
    ModelError,
    ModelNotFound,
    ModelNotReady,
    TritonTimeout,
    TritonUnavailable,
)
from gateway.triton import (
    GrpcClient,
    ModelConfig,
    TensorSpec,
    TritonClient,
    check_inputs,
    gather_or_cancel,
    map_triton_error,
)
from gateway.triton.batching import Assembler

pytestmark = pytest.mark.anyio


def config(max_batch_size: int = 4, **overrides: Any) -> ModelConfig:
    fields: dict[str, Any] = {
        "name": "seg",
        "versions": ("1",),
        "max_batch_size": max_batch_size,
        "inputs": (
            TensorSpec("image", "FP32", (1, 8, 8)),
            TensorSpec("hint", "INT64", (-1,), optional=True),
        ),
        "outputs": (TensorSpec("mask", "UINT8", (2, 8, 8)),),
    }
    fields.update(overrides)
    return ModelConfig(**fields)


def test_config_from_triton_json() -> None:
    metadata = {
        "name": "seg",
        "versions": ["1", "2"],
        "inputs": [{"name": "image", "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}],
        "outputs": [{"name": "mask", "datatype": "UINT8", "shape": ["-1", "2", "-1", "8"]}],
    }
    raw = {
        "name": "seg",
        "max_batch_size": 4,
        "backend": "onnxruntime",
        "input": [{"name": "image", "data_type": "TYPE_FP32", "dims": ["1", "8", "8"]}],
        "parameters": {"aicoco.task": {"string_value": "segmentation"}},
    }
    parsed = ModelConfig.from_triton(metadata, raw)
    assert parsed.versions == ("1", "2")
    assert parsed.inputs == (TensorSpec("image", "FP32", (1, 8, 8)),)
    assert parsed.outputs == (TensorSpec("mask", "UINT8", (2, -1, 8)),)
    assert parsed.parameters == {"aicoco.task": "segmentation"}
    assert parsed.backend == "onnxruntime"
    unbatched = ModelConfig.from_triton(metadata, {**raw, "max_batch_size": 0})
    assert unbatched.inputs[0].shape == (-1, 1, 8, 8)


def test_check_inputs_accepts_the_declared_tensors() -> None:
    x = np.zeros((3, 1, 8, 8), np.float32)
    assert check_inputs(config(), {"image": x})["image"] is x


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"image": np.zeros((3, 1, 8, 8), np.float64)}, "is FP32 but the pipeline gave float64"),
        ({"image": np.zeros((3, 1, 8, 8), np.float16)}, "never casts silently"),
        ({"image": np.zeros((3, 1, 8, 9), np.float32)}, "must have shape [N, 1, 8, 8]"),
        ({"image": np.zeros((1, 8, 8), np.float32)}, "must have shape [N, 1, 8, 8]"),
        ({"image": [[0.0]]}, "must be a numpy array"),
        ({}, "did not send input 'image'"),
        ({"image": np.zeros((1, 1, 8, 8), np.float32), "extra": np.zeros(1)}, "['extra']"),
        ({"image": np.zeros((0, 1, 8, 8), np.float32)}, "empty batch"),
        (
            {"image": np.zeros((2, 1, 8, 8), np.float32), "hint": np.zeros((3, 5), np.int64)},
            "different batch sizes [2, 3]",
        ),
    ],
)
def test_check_inputs_refuses_mismatches(inputs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InternalError) as caught:
        check_inputs(config(), inputs)
    assert fragment in caught.value.message
    assert "'seg'" in caught.value.message or "seg" in caught.value.details.get("model", "")


def test_check_inputs_without_batching_compares_the_whole_shape() -> None:
    unbatched = config(0, inputs=(TensorSpec("image", "FP32", (-1, 1, 8, 8)),))
    check_inputs(unbatched, {"image": np.zeros((5, 1, 8, 8), np.float32)})
    with pytest.raises(InternalError, match=r"shape \[\?, 1, 8, 8\]"):
        check_inputs(unbatched, {"image": np.zeros((1, 8, 8), np.float32)})


def error(status: str, message: str) -> InferenceServerException:
    return InferenceServerException(msg=message, status=status)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (
            "StatusCode.UNAVAILABLE",
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
            "Failed to connect to remote host: Connection refused",
            TritonUnavailable,
        ),
        ("StatusCode.UNAVAILABLE", "Socket closed", TritonUnavailable),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", TritonTimeout),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'seg' is not found", ModelNotFound),
        (
            "StatusCode.NOT_FOUND",
            "Request for unknown model: 'seg' has no available versions",
            ModelNotReady,
        ),
        (
            "StatusCode.UNAVAILABLE",
            "Request for unknown model: 'seg' version 1 is not at ready state",
            ModelNotReady,
        ),
        ("StatusCode.INTERNAL", "onnxruntime: Non-zero status code returned", ModelError),
        ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'image'", ModelError),
    ],
)
def test_error_mapping(status: str, message: str, kind: type[Exception]) -> None:
    mapped = map_triton_error(error(status, message), "seg")
    assert type(mapped) is kind
    assert mapped.details["model"] == "seg"
    if kind is ModelError:
        assert mapped.message == f"model 'seg' failed: {message}"
        assert mapped.status == 502


def test_assembler_writes_batches_in_place_whatever_the_arrival_order() -> None:
    assembler = Assembler(config(), 5)
    parts = {(0, 2): 0, (4, 5): 2, (2, 4): 1}
    for (start, stop), value in parts.items():
        assembler.put(start, stop, {"mask": np.full((stop - start, 2, 8, 8), value, np.uint8)})
    mask = assembler.result()["mask"]
    assert mask.shape == (5, 2, 8, 8)
    np.testing.assert_array_equal(mask[:, 0, 0, 0], [0, 0, 1, 1, 2])


def test_assembler_refuses_wrong_batch_and_changing_shapes() -> None:
    assembler = Assembler(config(), 4)
    with pytest.raises(InvalidModelOutput, match="for a batch of 2"):
        assembler.put(0, 2, {"mask": np.zeros((3, 2, 8, 8), np.uint8)})
    assembler.put(0, 2, {"mask": np.zeros((2, 2, 8, 8), np.uint8)})
    with pytest.raises(InvalidModelOutput, match="changes shape between batches"):
        assembler.put(2, 4, {"mask": np.zeros((2, 2, 8, 9), np.uint8)})


async def test_gather_or_cancel_cancels_the_rest_on_failure() -> None:
    cancelled: list[int] = []

    async def slow(i: int) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ModelError("boom")

    with pytest.raises(ModelError, match="boom"):
        await gather_or_cancel([slow(0), fail(), slow(1)])
    assert sorted(cancelled) == [0, 1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_triton_down_is_503_and_not_ready() -> None:
    client = TritonClient(f"127.0.0.1:{closed_port()}", timeout_s=5)
    try:
        assert await client.server_ready() is False
        assert await client.server_live() is False
        with pytest.raises(TritonUnavailable):
            await client.model_ready("seg")
        with pytest.raises(TritonUnavailable):
            await client.model_config("seg")
        with pytest.raises(TritonUnavailable):
            await client.infer("seg", {"image": np.zeros((1, 1, 8, 8), np.float32)})
    finally:
        await client.close()


class _Response:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self._outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._outputs.get(name)


class _Stub:
    """A Triton serving one ready model, ``seg`` (image FP32 [1, 8, 8] -> mask UINT8 [2, 8, 8]).

    Its ``infer`` answers batches, each later than the one before, until call ``fail_at``, which
    fails the way Triton reports a model error. ``config_gate``, when set, holds every config
    request until it is set. ``calls`` counts the calls by method.
    """

    def __init__(self, max_batch_size: int = 2, fail_at: int = 0) -> None:
        self.max_batch_size = max_batch_size
        self.fail_at = fail_at
        self.calls: Counter[str] = Counter()
        self.cancelled = 0
        self.config_gate: asyncio.Event | None = None

    async def is_server_live(self, **kwargs: Any) -> bool:
        return True

    async def is_server_ready(self, **kwargs: Any) -> bool:
        return True

    async def is_model_ready(self, model_name: str, **kwargs: Any) -> bool:
        return model_name == "seg"

    async def get_model_repository_index(self, **kwargs: Any) -> dict[str, Any]:
        return {"models": [{"name": "seg", "version": "1", "state": "READY"}]}

    async def get_model_metadata(self, model_name: str, **kwargs: Any) -> dict[str, Any]:
        batch = ["-1"] if self.max_batch_size else []
        return {
            "name": model_name,
            "versions": ["1"],
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [*batch, "1", "8", "8"]}],
            "outputs": [{"name": "mask", "datatype": "UINT8", "shape": [*batch, "2", "8", "8"]}],
        }

    async def get_model_config(self, model_name: str, **kwargs: Any) -> dict[str, Any]:
        self.calls["get_model_config"] += 1
        if self.config_gate is not None:
            await self.config_gate.wait()
        return {"config": {"name": model_name, "max_batch_size": self.max_batch_size}}

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> _Response:
        self.calls["infer"] += 1
        if self.calls["infer"] == self.fail_at:
            raise error("StatusCode.INTERNAL", "onnxruntime failed on batch")
        try:
            await asyncio.sleep(0.05 * self.calls["infer"])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        batch = inputs[0].shape()[0]
        return _Response({"mask": np.zeros((batch, 2, 8, 8), np.uint8)})

    async def close(self) -> None:
        return None


async def test_a_failing_batch_fails_the_call_names_the_model_and_cancels_the_rest() -> None:
    stub = _Stub(max_batch_size=2, fail_at=3)
    client = TritonClient("127.0.0.1:1", timeout_s=5, max_concurrent_batches=8, grpc=stub)
    with pytest.raises(ModelError, match="model 'seg' failed: onnxruntime failed on batch"):
        await client.infer("seg", {"image": np.zeros((9, 1, 8, 8), np.float32)})
    assert stub.calls["infer"] == 5
    assert stub.cancelled == 4
    # The model's configuration is forgotten: the next call reads it again.
    assert stub.calls["get_model_config"] == 1
    await client.model_config("seg")
    assert stub.calls["get_model_config"] == 2


async def test_batches_respect_the_deadline() -> None:
    stub = _Stub(max_batch_size=1)
    client = TritonClient("127.0.0.1:1", timeout_s=0.01, max_concurrent_batches=1, grpc=stub)
    with pytest.raises(TritonTimeout, match=r"within 0\.01 s"):
        await client.infer("seg", {"image": np.zeros((4, 1, 8, 8), np.float32)})


async def test_infer_each_hands_every_batch_to_the_sink() -> None:
    client = TritonClient("127.0.0.1:1", timeout_s=5, max_concurrent_batches=2, grpc=_Stub(2))
    seen: list[tuple[int, int, tuple[int, ...]]] = []

    async def sink(start: int, stop: int, outputs: dict[str, np.ndarray]) -> None:
        seen.append((start, stop, outputs["mask"].shape))

    await client.infer_each("seg", {"image": np.zeros((5, 1, 8, 8), np.float32)}, sink)
    assert sorted(seen) == [(0, 2, (2, 2, 8, 8)), (2, 4, (2, 2, 8, 8)), (4, 5, (1, 2, 8, 8))]


async def test_infer_each_needs_a_batch_dimension() -> None:
    client = TritonClient("127.0.0.1:1", timeout_s=5, grpc=_Stub(max_batch_size=0))

    async def sink(start: int, stop: int, outputs: dict[str, np.ndarray]) -> None:
        raise AssertionError("no batch expected")

    with pytest.raises(InternalError, match="no batch dimension"):
        await client.infer_each("seg", {"image": np.zeros((1, 1, 8, 8), np.float32)}, sink)


class _CountingGrpc:
    """The real gRPC client, counting the readiness checks that start each config fetch."""

    def __init__(self, url: str) -> None:
        self.inner: GrpcClient = grpcaio.InferenceServerClient(url)
        self.ready_checks = 0

    async def is_server_live(self, **kwargs: Any) -> Any:
        return await self.inner.is_server_live(**kwargs)

    async def is_server_ready(self, **kwargs: Any) -> Any:
        return await self.inner.is_server_ready(**kwargs)

    async def is_model_ready(self, model_name: str, **kwargs: Any) -> Any:
        self.ready_checks += 1
        return await self.inner.is_model_ready(model_name, **kwargs)

    async def get_model_repository_index(self, **kwargs: Any) -> Any:
        return await self.inner.get_model_repository_index(**kwargs)

    async def get_model_metadata(self, model_name: str, **kwargs: Any) -> Any:
        return await self.inner.get_model_metadata(model_name, **kwargs)

    async def get_model_config(self, model_name: str, **kwargs: Any) -> Any:
        return await self.inner.get_model_config(model_name, **kwargs)

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> Any:
        return await self.inner.infer(model_name, inputs, **kwargs)

    async def close(self) -> None:
        await self.inner.close()


async def test_one_config_fetch_serves_every_waiter_of_a_hung_triton() -> None:
    """A Triton that accepts connections and never answers (SIGSTOP): concurrent requests for
    one model share a single fetch and all get its 504, instead of each running its own timed
    attempt in turn behind a lock (5, 10, 15, 20 s for four waiters before)."""
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(16)  # connections complete in the kernel; nothing ever reads them
        url = f"127.0.0.1:{frozen.getsockname()[1]}"
        grpc = _CountingGrpc(url)
        client = TritonClient(url, timeout_s=0.5, grpc=grpc)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(
                *(client.model_config("seg") for _ in range(4)), return_exceptions=True
            )
            elapsed = loop.time() - started
        finally:
            await client.close()
    assert grpc.ready_checks == 1
    assert all(isinstance(result, TritonTimeout) for result in results), results
    # Four waiters in turn would take four timeouts; together they take one.
    assert elapsed < 4 * 0.5


async def test_a_waiter_that_leaves_does_not_cancel_the_fetch_of_the_others() -> None:
    stub = _Stub()
    stub.config_gate = asyncio.Event()
    client = TritonClient("127.0.0.1:1", timeout_s=5, grpc=stub)
    leaving = asyncio.ensure_future(client.model_config("seg"))
    staying = asyncio.ensure_future(client.model_config("seg"))
    for _ in range(5):
        await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    stub.config_gate.set()
    fetched = await staying
    assert fetched.name == "seg" and fetched.max_batch_size == 2
    assert leaving.cancelled()
    assert await client.model_config("seg") == fetched  # cached now
    assert stub.calls["get_model_config"] == 1
