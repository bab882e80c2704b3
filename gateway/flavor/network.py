"""A Triton model with an ONNX Runtime session's face, for FLaVor code that calls it in-process.

FLaVor's ``inference`` stages call ``self.network.run(None, {"image": x})[0]`` on an
``onnxruntime.InferenceSession``. :class:`TritonSession` answers that call (and ``get_inputs``,
``get_outputs``) with the model Triton serves, so the stage runs unchanged once
``define_inference_network`` returns ``TritonSession("model_name")`` instead of the session.
Called like a torch module (``self.network(tensor)``), it answers in the caller's array type.

The call blocks, as ONNX Runtime's does: FLaVor stages are plain functions, and the gateway
runs them on its worker threads. Underneath, the call is a coroutine on the gateway's event loop
(one gRPC channel, shared), which the worker thread waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.errors import InternalError
from gateway.flavor.arrays import like, to_numpy
from gateway.logs import request_id_var
from gateway.triton import ModelConfig, TritonClient

_ORT_TYPES = {"FP32": "tensor(float)", "FP16": "tensor(float16)", "INT64": "tensor(int64)"}


@dataclass(frozen=True)
class NodeArg:
    """What ONNX Runtime's ``get_inputs()`` items give: ``name``, ``shape``, ``type``."""

    name: str
    shape: list[int | str]
    type: str


class TritonSession:
    """``define_inference_network``'s return value in a ported FLaVor model."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._client: TritonClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, client: TritonClient, loop: asyncio.AbstractEventLoop) -> None:
        """Done by the gateway before the first stage runs."""
        self._client, self._loop = client, loop

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any], *_: Any
    ) -> list[np.ndarray]:
        """ONNX Runtime's ``run``: the outputs named (all, in the model's order, for None)."""
        config = self._config()
        inputs = {name: np.asarray(value) for name, value in input_feed.items()}
        outputs = self._wait(self._require_client().infer(self.model_name, inputs, **self._tag()))
        names = list(output_names) if output_names else [spec.name for spec in config.outputs]
        unknown = [name for name in names if name not in outputs]
        if unknown:
            raise InternalError(
                f"model '{self.model_name}' has no output {unknown[0]!r}; it has {sorted(outputs)}",
                details={"model": self.model_name},
            )
        return [outputs[name] for name in names]

    def __call__(self, *arrays: Any) -> Any:
        """FLaVor's default ``inference`` (``self.network(x)``), and what a torch script calls
        its module with: the arrays are the model's inputs in order; the answer is its one
        output, or the list of them, in the first array's type (a torch tensor on its device
        and with its dtype, numpy for numpy: :mod:`gateway.flavor.arrays`)."""
        config = self._config()
        if len(arrays) != len(config.inputs):
            raise InternalError(
                f"model '{self.model_name}' takes {len(config.inputs)} input(s) "
                f"{[spec.name for spec in config.inputs]}, got {len(arrays)}",
                details={"model": self.model_name},
            )
        feeds = {
            spec.name: to_numpy(array, spec.dtype)
            for spec, array in zip(config.inputs, arrays, strict=True)
        }
        outputs = [like(output, arrays[0]) for output in self.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else outputs

    def get_inputs(self) -> list[NodeArg]:
        return self._nodes(self._config(), inputs=True)

    def get_outputs(self) -> list[NodeArg]:
        return self._nodes(self._config(), inputs=False)

    def _nodes(self, config: ModelConfig, *, inputs: bool) -> list[NodeArg]:
        batch: list[int | str] = ["batch"] if config.max_batch_size > 0 else []
        return [
            NodeArg(spec.name, [*batch, *spec.shape], _ORT_TYPES.get(spec.datatype, spec.datatype))
            for spec in (config.inputs if inputs else config.outputs)
        ]

    def _config(self) -> ModelConfig:
        config: ModelConfig = self._wait(self._require_client().model_config(self.model_name))
        return config

    def _tag(self) -> dict[str, str]:
        return {"request_id": request_id_var.get() or ""}

    def _require_client(self) -> TritonClient:
        if self._client is None or self._loop is None:
            raise InternalError(
                f"TritonSession({self.model_name!r}) is used before the gateway attached it: "
                "call it from a stage (inference), not while the class is being constructed",
                details={"model": self.model_name},
            )
        return self._client

    def _wait(self, work: Any) -> Any:
        loop = self._loop
        assert loop is not None
        if _on_loop(loop):
            work.close()
            raise InternalError(
                f"TritonSession({self.model_name!r}).run() blocks; it was called on the event "
                "loop (an async stage). Await gateway.pipelines.TritonModel there instead",
                details={"model": self.model_name},
            )
        return asyncio.run_coroutine_threadsafe(work, loop).result()

    def __repr__(self) -> str:
        return f"TritonSession({self.model_name!r})"


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
