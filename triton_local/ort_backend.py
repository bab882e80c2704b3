"""``TritonPythonModel`` of the local ``onnxruntime`` backend: the Python backend API around
``OnnxRunner``. Only importable inside Triton's Python backend stub.

Tensors cross the Python backend through DLPack rather than ``Tensor.as_numpy()`` and
``Tensor(name, array)``: the wheel's stub was built against numpy 1.x and misreads numpy 2 arrays
(inputs come back as repeated first elements, outputs are rejected for their byte size). DLPack
carries dtype and shape itself, and copies nothing.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_local.ort_runner import (
    Array,
    BackendError,
    OnnxRunner,
    RequestError,
    parse_model_config,
)

# The Python backend renames a DLPack capsule it has consumed to "used_dlpack" instead of the
# standard "used_dltensor"; numpy's capsule destructor then reports a spurious ValueError for every
# output tensor. Giving the capsule the standard name after the hand-over keeps the log clean; the
# backend still frees the tensor through the DLPack deleter it took over.
_USED_CAPSULE_NAME = b"used_dltensor"
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


class TritonPythonModel:
    """One model instance: an ONNX Runtime CPU session checked against the model config."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the ONNX file; any mismatch with config.pbtxt fails the load with the reason."""
        spec = parse_model_config(json.loads(args["model_config"]))
        model_path = Path(args["model_repository"]) / args["model_version"] / spec.model_filename
        self._runner = OnnxRunner(spec, model_path)
        settings = spec.settings
        pb_utils.Logger.log_info(
            f"onnxruntime (local, CPU) loaded {model_path} for instance "
            f"{args['model_instance_name']}: intra_op_thread_count={settings.intra_op_threads}, "
            f"inter_op_thread_count={settings.inter_op_threads}, "
            f"allow_spinning={settings.allow_spinning}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer a dynamic batch: one response per request, errors confined to their request."""
        results = self._runner.run([self._read(request) for request in requests])
        return [
            self._respond(request, result)
            for request, result in zip(requests, results, strict=True)
        ]

    def _read(self, request: Any) -> dict[str, Array]:
        inputs: dict[str, Array] = {}
        for tensor in self._runner.spec.inputs:
            pb_tensor = pb_utils.get_input_tensor_by_name(request, tensor.name)
            if pb_tensor is not None:
                inputs[tensor.name] = np.from_dlpack(pb_tensor)
        return inputs

    def _respond(self, request: Any, result: dict[str, Array] | BackendError) -> Any:
        if isinstance(result, BackendError):
            code = (
                pb_utils.TritonError.INVALID_ARG
                if isinstance(result, RequestError)
                else pb_utils.TritonError.INTERNAL
            )
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result), code))
        wanted = set(request.requested_output_names()) or set(result)
        return pb_utils.InferenceResponse(
            output_tensors=[
                _to_tensor(name, array) for name, array in result.items() if name in wanted
            ]
        )


def _to_tensor(name: str, array: Array) -> Any:
    capsule = np.require(array, requirements="C").__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED_CAPSULE_NAME)
    return tensor
