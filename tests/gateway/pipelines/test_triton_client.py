"""The Triton client without a Triton: input checks, error mapping, batch reassembly.

The happy paths (metadata discovery, batching against the dynamic batcher) run against a real
Triton in tests/e2e; here a stand-in gRPC stub is used only to produce the failures that a
healthy server will not (a model failing on the third batch), and a closed port stands for a
Triton that is down.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import numpy as np
import pytest
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
    ModelConfig,
    TensorSpec,
    TritonClient,
    _Assembler,
    check_inputs,
    gather_or_cancel,
    map_triton_error,
)


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
    assembler = _Assembler(config(), 5)
    parts = {(0, 2): 0, (4, 5): 2, (2, 4): 1}
    for (start, stop), value in parts.items():
        assembler.put(start, stop, {"mask": np.full((stop - start, 2, 8, 8), value, np.uint8)})
    mask = assembler.result()["mask"]
    assert mask.shape == (5, 2, 8, 8)
    np.testing.assert_array_equal(mask[:, 0, 0, 0], [0, 0, 1, 1, 2])


def test_assembler_refuses_wrong_batch_and_changing_shapes() -> None:
    assembler = _Assembler(config(), 4)
    with pytest.raises(InvalidModelOutput, match="for a batch of 2"):
        assembler.put(0, 2, {"mask": np.zeros((3, 2, 8, 8), np.uint8)})
    assembler.put(0, 2, {"mask": np.zeros((2, 2, 8, 8), np.uint8)})
    with pytest.raises(InvalidModelOutput, match="changes shape between batches"):
        assembler.put(2, 4, {"mask": np.zeros((2, 2, 8, 9), np.uint8)})


def test_gather_or_cancel_cancels_the_rest_on_failure() -> None:
    asyncio.run(_gather_or_cancel_cancels_the_rest_on_failure())


async def _gather_or_cancel_cancels_the_rest_on_failure() -> None:
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


def test_triton_down_is_503_and_not_ready() -> None:
    asyncio.run(_triton_down_is_503_and_not_ready())


async def _triton_down_is_503_and_not_ready() -> None:
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


class _FailingStub:
    """Answers batches until ``fail_at``, then fails the way Triton reports a model error."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.cancelled = 0

    async def infer(self, name: str, inputs: list[Any], **kwargs: Any) -> _Response:
        self.calls += 1
        if self.calls == self.fail_at:
            raise error("StatusCode.INTERNAL", "onnxruntime failed on batch")
        try:
            await asyncio.sleep(0.05 * self.calls)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        batch = inputs[0].shape()[0]
        return _Response({"mask": np.zeros((batch, 2, 8, 8), np.uint8)})

    async def close(self) -> None:
        return None


def test_a_failing_batch_fails_the_call_names_the_model_and_cancels_the_rest() -> None:
    asyncio.run(_a_failing_batch_fails_the_call_names_the_model_and_cancels_the_rest())


async def _a_failing_batch_fails_the_call_names_the_model_and_cancels_the_rest() -> None:
    client = TritonClient("127.0.0.1:1", timeout_s=5, max_concurrent_batches=8)
    stub = _FailingStub(fail_at=3)
    client._client = stub
    client._configs["seg"] = (float("inf"), config(max_batch_size=2))
    with pytest.raises(ModelError, match="model 'seg' failed: onnxruntime failed on batch"):
        await client.infer("seg", {"image": np.zeros((9, 1, 8, 8), np.float32)})
    assert stub.calls == 5
    assert stub.cancelled == 4
    assert "seg" not in client._configs


def test_batches_respect_the_deadline() -> None:
    asyncio.run(_batches_respect_the_deadline())


async def _batches_respect_the_deadline() -> None:
    client = TritonClient("127.0.0.1:1", timeout_s=0.01, max_concurrent_batches=1)
    client._client = _FailingStub(fail_at=0)
    client._configs["seg"] = (float("inf"), config(max_batch_size=1))
    with pytest.raises(TritonTimeout, match=r"within 0\.01 s"):
        await client.infer("seg", {"image": np.zeros((4, 1, 8, 8), np.float32)})


def test_infer_each_hands_every_batch_to_the_sink() -> None:
    asyncio.run(_infer_each_hands_every_batch_to_the_sink())


async def _infer_each_hands_every_batch_to_the_sink() -> None:
    client = TritonClient("127.0.0.1:1", timeout_s=5, max_concurrent_batches=2)
    client._client = _FailingStub(fail_at=0)
    client._configs["seg"] = (float("inf"), config(max_batch_size=2))
    seen: list[tuple[int, int, tuple[int, ...]]] = []

    async def sink(start: int, stop: int, outputs: dict[str, np.ndarray]) -> None:
        seen.append((start, stop, outputs["mask"].shape))

    await client.infer_each("seg", {"image": np.zeros((5, 1, 8, 8), np.float32)}, sink)
    assert sorted(seen) == [(0, 2, (2, 2, 8, 8)), (2, 4, (2, 2, 8, 8)), (4, 5, (1, 2, 8, 8))]


def test_infer_each_needs_a_batch_dimension() -> None:
    asyncio.run(_infer_each_needs_a_batch_dimension())


async def _infer_each_needs_a_batch_dimension() -> None:
    client = TritonClient("127.0.0.1:1", timeout_s=5)
    client._configs["seg"] = (float("inf"), config(max_batch_size=0))

    async def sink(start: int, stop: int, outputs: dict[str, np.ndarray]) -> None:
        raise AssertionError("no batch expected")

    with pytest.raises(InternalError, match="no batch dimension"):
        await client.infer_each("seg", {"image": np.zeros((1, 1, 8, 8), np.float32)}, sink)


def test_one_config_fetch_serves_every_waiter_of_a_hung_triton() -> None:
    """A Triton that accepts connections and never answers (SIGSTOP): concurrent requests for
    one model share a single fetch and all get its 504, instead of each running its own timed
    attempt in turn behind a lock (5, 10, 15, 20 s for four waiters before)."""
    asyncio.run(_one_config_fetch_serves_every_waiter())


async def _one_config_fetch_serves_every_waiter() -> None:
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(16)  # connections complete in the kernel; nothing ever reads them
        client = TritonClient(f"127.0.0.1:{frozen.getsockname()[1]}", timeout_s=0.5)
        fetches = 0
        fetch = client._fetch_config

        async def counted(name: str) -> ModelConfig:
            nonlocal fetches
            fetches += 1
            return await fetch(name)

        client._fetch_config = counted  # type: ignore[method-assign]
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(
                *(client.model_config("seg") for _ in range(4)), return_exceptions=True
            )
            elapsed = loop.time() - started
        finally:
            await client.close()
    assert fetches == 1
    assert all(isinstance(result, TritonTimeout) for result in results), results
    # Four waiters in turn would take four timeouts; together they take one.
    assert elapsed < 4 * 0.5


def test_a_waiter_that_leaves_does_not_cancel_the_fetch_of_the_others() -> None:
    asyncio.run(_a_waiter_that_leaves())


async def _a_waiter_that_leaves() -> None:
    client = TritonClient("127.0.0.1:1", timeout_s=5)
    release = asyncio.Event()

    async def slow(name: str) -> ModelConfig:
        await release.wait()
        return config()

    client._fetch_config = slow  # type: ignore[method-assign]
    try:
        leaving = asyncio.ensure_future(client.model_config("seg"))
        staying = asyncio.ensure_future(client.model_config("seg"))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        release.set()
        assert (await staying) == config()
        assert leaving.cancelled()
        assert await client.model_config("seg") == config()  # cached now
    finally:
        await client.close()
