"""A FLaVor script's torch calls on the network handle: ``self.network(tensor)`` answers a
tensor on the caller's device with its dtype, and MONAI's ``sliding_window_inference`` can call
the handle patch batch by patch batch, as ``seg3d_example`` does; the gateway imports no torch.

The handle talks to a stand-in of the Triton client that runs the same ONNX network with ONNX
Runtime (what Triton does with it is covered end to end); the calls block on a worker thread
while the client's coroutines run on an event loop, as in the gateway.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import cast

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from gateway.flavor import TritonSession
from gateway.flavor.arrays import like, to_numpy
from gateway.triton import ModelConfig, TensorSpec, TritonClient
from tests.volumetric import VolumeModel, ort_predictor

MODEL = VolumeModel(roi=(8, 16, 16))


class OrtTriton:
    """The two calls ``TritonSession`` makes of the Triton client."""

    def __init__(self, model: VolumeModel) -> None:
        self.run = ort_predictor(model.onnx())
        self.config = ModelConfig(
            name="volume",
            versions=("1",),
            max_batch_size=model.max_batch_size,
            inputs=(TensorSpec("image", "FP32", (1, *model.roi)),),
            outputs=(TensorSpec(model.output, "FP32", (model.channels, *model.roi)),),
        )
        self.sent: list[np.ndarray] = []

    async def model_config(self, name: str) -> ModelConfig:
        return self.config

    async def infer(
        self, name: str, inputs: Mapping[str, np.ndarray], *, request_id: str = ""
    ) -> dict[str, np.ndarray]:
        self.sent.append(inputs["image"])
        return {self.config.outputs[0].name: self.run(inputs["image"])}


@pytest.fixture
def triton() -> Iterator[tuple[TritonSession, OrtTriton]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    client = OrtTriton(MODEL)
    session = TritonSession("volume")
    session.attach(cast(TritonClient, client), loop)
    try:
        yield session, client
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def patches(count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(count)
    return torch.rand((count, 1, *MODEL.roi), generator=generator).to(dtype)


def test_a_tensor_in_is_a_tensor_out(triton: tuple[TritonSession, OrtTriton]) -> None:
    session, client = triton
    x = patches(3).requires_grad_()
    out = session(x)
    assert isinstance(out, torch.Tensor)
    assert (out.dtype, out.device, tuple(out.shape)) == (x.dtype, x.device, (3, 3, *MODEL.roi))
    np.testing.assert_allclose(out.numpy(), client.run(x.detach().numpy()), atol=1e-6)


def test_a_half_tensor_gets_a_half_answer_from_an_fp32_model(
    triton: tuple[TritonSession, OrtTriton],
) -> None:
    session, client = triton
    out = session(patches(2, torch.float16))
    assert out.dtype == torch.float16
    assert client.sent[-1].dtype == np.float32


def test_numpy_in_is_numpy_out(triton: tuple[TritonSession, OrtTriton]) -> None:
    session, _ = triton
    out = session(patches(1).numpy())
    assert type(out) is np.ndarray and out.shape == (1, 3, *MODEL.roi)


def test_monai_sliding_window_calls_the_handle_as_it_calls_a_module(
    triton: tuple[TritonSession, OrtTriton],
) -> None:
    session, client = triton
    volume = torch.rand((1, 1, 20, 40, 37), generator=torch.Generator().manual_seed(0))
    found = sliding_window_inference(volume, MODEL.roi, 4, session, overlap=0.5, mode="gaussian")
    reference = sliding_window_inference(
        volume,
        MODEL.roi,
        4,
        lambda x: torch.from_numpy(client.run(x.numpy())),
        overlap=0.5,
        mode="gaussian",
    )
    assert isinstance(found, torch.Tensor)
    torch.testing.assert_close(found, reference, atol=1e-6, rtol=0)
    assert max(len(batch) for batch in client.sent) == 4


def test_the_conversions_leave_other_libraries_alone() -> None:
    assert like(np.zeros(2), [1, 2]).__class__ is np.ndarray
    assert to_numpy([1, 2], np.dtype(np.float32)).dtype == np.float32


def test_the_gateway_imports_no_torch() -> None:
    code = "import sys, gateway.app, gateway.flavor; print('torch' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
