"""Run an ONNX model the way its Triton model configuration describes it.

This is the whole of the local ``onnxruntime`` backend except the Python-backend plumbing, kept
free of ``triton_python_backend_utils`` so that it can be exercised in-process. It mirrors what
Triton's native ONNX Runtime backend does with the same ``config.pbtxt`` (names, data types,
``max_batch_size``, dynamic batching, ``default_model_filename``, the ``intra_op_thread_count`` /
``inter_op_thread_count`` parameters), so a model folder behaves the same here and on the GPU.

A dynamic batch arrives as a list of requests: requests with the same per-item shapes are
concatenated along the batch dimension and run with one ``session.run`` (far cheaper on a small
CPU than one call per request), then the outputs are split back per request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

DEFAULT_MODEL_FILENAME = "model.onnx"

# Triton data type -> (numpy type, ONNX Runtime type string).
DATA_TYPES: dict[str, tuple[type[np.generic], str]] = {
    "TYPE_BOOL": (np.bool_, "tensor(bool)"),
    "TYPE_UINT8": (np.uint8, "tensor(uint8)"),
    "TYPE_UINT16": (np.uint16, "tensor(uint16)"),
    "TYPE_UINT32": (np.uint32, "tensor(uint32)"),
    "TYPE_UINT64": (np.uint64, "tensor(uint64)"),
    "TYPE_INT8": (np.int8, "tensor(int8)"),
    "TYPE_INT16": (np.int16, "tensor(int16)"),
    "TYPE_INT32": (np.int32, "tensor(int32)"),
    "TYPE_INT64": (np.int64, "tensor(int64)"),
    "TYPE_FP16": (np.float16, "tensor(float16)"),
    "TYPE_FP32": (np.float32, "tensor(float)"),
    "TYPE_FP64": (np.float64, "tensor(double)"),
}
ONNX_TO_TRITON = {onnx_type: name for name, (_, onnx_type) in DATA_TYPES.items()}
NUMPY_TO_TRITON = {np.dtype(numpy_type): name for name, (numpy_type, _) in DATA_TYPES.items()}

Array = npt.NDArray[Any]
# A dimension of an expected shape: a size, or None for "any size".
Dim = int | None


class BackendError(Exception):
    """Base of the errors the backend turns into a Triton error for one request or the model."""


class ModelConfigError(BackendError):
    """The model cannot be served as configured; Triton shows this as the load failure reason."""


class RequestError(BackendError):
    """One request does not fit the model (shape, data type, missing input): the client's fault."""


class ExecutionError(BackendError):
    """ONNX Runtime failed, or produced outputs that contradict the configuration."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as declared in ``config.pbtxt`` (dims without the batch dimension)."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(DATA_TYPES[self.data_type][0])


@dataclass(frozen=True)
class SessionSettings:
    """ONNX Runtime threading, from the model's ``parameters``.

    The defaults suit a small shared CPU: as many intra-op threads as CPUs this process may use,
    one inter-op thread (sequential execution), and no spinning, so idle sessions of several
    models do not burn the cores the gateway needs for decoding and contour extraction.
    """

    intra_op_threads: int
    inter_op_threads: int = 1
    allow_spinning: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What the backend needs from a model's configuration."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    model_filename: str
    settings: SessionSettings

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


def parse_model_config(config: Mapping[str, Any]) -> ModelSpec:
    """Read the model configuration Triton hands the backend (the JSON form of config.pbtxt)."""
    name = str(config.get("name", ""))
    inputs = tuple(_tensor_spec(entry, "input") for entry in config.get("input", []))
    outputs = tuple(_tensor_spec(entry, "output") for entry in config.get("output", []))
    if not inputs or not outputs:
        raise ModelConfigError("config.pbtxt must declare at least one input and one output")
    parameters = config.get("parameters") or {}
    settings = SessionSettings(
        intra_op_threads=_int_parameter(parameters, "intra_op_thread_count", _cpu_count()),
        inter_op_threads=_int_parameter(parameters, "inter_op_thread_count", 1),
        allow_spinning=_bool_parameter(parameters, "allow_spinning", default=False),
    )
    return ModelSpec(
        name=name,
        max_batch_size=int(config.get("max_batch_size", 0)),
        inputs=inputs,
        outputs=outputs,
        model_filename=str(config.get("default_model_filename") or DEFAULT_MODEL_FILENAME),
        settings=settings,
    )


def _tensor_spec(entry: Mapping[str, Any], kind: str) -> TensorSpec:
    name = str(entry["name"])
    data_type = str(entry.get("data_type", ""))
    if data_type not in DATA_TYPES:
        supported = ", ".join(DATA_TYPES)
        raise ModelConfigError(
            f"{kind} {name!r} has data_type {data_type or 'unset'}; the local onnxruntime "
            f"backend supports {supported}"
        )
    if entry.get("reshape"):
        raise ModelConfigError(
            f"{kind} {name!r} uses reshape, which the local onnxruntime backend does not "
            "support; give dims in the model's own layout"
        )
    return TensorSpec(
        name=name,
        data_type=data_type,
        dims=tuple(int(d) for d in entry.get("dims", [])),
    )


def _cpu_count() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def _parameter(parameters: Mapping[str, Any], key: str) -> str | None:
    value = parameters.get(key)
    if value is None:
        return None
    return str(value.get("string_value", "")).strip() if isinstance(value, Mapping) else str(value)


def _int_parameter(parameters: Mapping[str, Any], key: str, default: int) -> int:
    raw = _parameter(parameters, key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ModelConfigError(f"parameter {key} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ModelConfigError(f"parameter {key} must be 0 (ONNX Runtime decides) or more")
    return value


def _bool_parameter(parameters: Mapping[str, Any], key: str, *, default: bool) -> bool:
    raw = _parameter(parameters, key)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ModelConfigError(f"parameter {key} must be true or false, got {raw!r}")


def format_shape(dims: Sequence[Dim], *, batch: bool) -> str:
    """Render an expected shape for error messages: ``N`` is the batch, ``?`` any size."""
    parts = (["N"] if batch else []) + ["?" if d is None else str(d) for d in dims]
    return "[" + ", ".join(parts) + "]"


class OnnxRunner:
    """An ONNX Runtime CPU session checked against the model configuration.

    Construction fails with ``ModelConfigError`` when the file is missing or unreadable, or when
    config and ONNX graph disagree (names, data types, ranks, fixed sizes): a model that loads is
    one whose requests can only fail for the client's reasons.
    """

    def __init__(self, spec: ModelSpec, model_path: Path) -> None:
        self.spec = spec
        if not model_path.is_file():
            raise ModelConfigError(
                f"model file {model_path} not found: the onnxruntime backend runs "
                f"<model>/<version>/{spec.model_filename} (set default_model_filename to change it)"
            )
        self._session = create_session(model_path, spec.settings)
        onnx_inputs = {arg.name: arg for arg in self._session.get_inputs()}
        onnx_outputs = {arg.name: arg for arg in self._session.get_outputs()}
        undeclared = sorted(set(onnx_inputs) - {t.name for t in spec.inputs})
        if undeclared:
            raise ModelConfigError(
                f"the ONNX model has inputs {undeclared} that config.pbtxt does not declare"
            )
        self._input_shapes = {t.name: self._expected(t, onnx_inputs, "input") for t in spec.inputs}
        self._output_shapes = {
            t.name: self._expected(t, onnx_outputs, "output") for t in spec.outputs
        }
        self._output_names = [t.name for t in spec.outputs]

    def _expected(self, tensor: TensorSpec, onnx_args: Mapping[str, Any], kind: str) -> list[Dim]:
        """Merge config dims and the ONNX shape into the per-item shape to check against."""
        arg = onnx_args.get(tensor.name)
        if arg is None:
            raise ModelConfigError(
                f"config.pbtxt declares {kind} {tensor.name!r} but the ONNX model's {kind}s are "
                f"{sorted(onnx_args)}"
            )
        wanted_type = DATA_TYPES[tensor.data_type][1]
        if arg.type != wanted_type:
            actual = ONNX_TO_TRITON.get(arg.type, arg.type)
            raise ModelConfigError(
                f"{kind} {tensor.name!r} is {tensor.data_type} in config.pbtxt but {actual} in "
                "the ONNX model"
            )
        onnx_shape: list[Dim] = [d if isinstance(d, int) and d >= 0 else None for d in arg.shape]
        if self.spec.batching:
            if (
                not onnx_shape
                or onnx_shape[0] not in (None, 1)
                or (onnx_shape[0] == 1 and self.spec.max_batch_size > 1)
            ):
                raise ModelConfigError(
                    f"{kind} {tensor.name!r}: max_batch_size is {self.spec.max_batch_size} but "
                    f"the ONNX shape {arg.shape} has no dynamic first (batch) dimension"
                )
            onnx_shape = onnx_shape[1:]
        if len(onnx_shape) != len(tensor.dims):
            raise ModelConfigError(
                f"{kind} {tensor.name!r} has dims {list(tensor.dims)} in config.pbtxt but the "
                f"ONNX shape is {arg.shape}"
                + (" (config dims exclude the batch dimension)" if self.spec.batching else "")
            )
        merged: list[Dim] = []
        for config_dim, onnx_dim in zip(tensor.dims, onnx_shape, strict=True):
            if config_dim >= 0 and onnx_dim is not None and config_dim != onnx_dim:
                raise ModelConfigError(
                    f"{kind} {tensor.name!r} has dims {list(tensor.dims)} in config.pbtxt but "
                    f"the ONNX shape is {arg.shape}"
                )
            merged.append(config_dim if config_dim >= 0 else onnx_dim)
        return merged

    def run(self, requests: Sequence[Mapping[str, Array]]) -> list[dict[str, Array] | BackendError]:
        """Run a dynamic batch: one result (all outputs, or the error) per request, in order."""
        results: list[dict[str, Array] | BackendError] = []
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, inputs in enumerate(requests):
            try:
                self.check(inputs)
            except RequestError as error:
                results.append(error)
                continue
            results.append({})
            key = self._group_key(inputs) if self.spec.batching else (index,)
            groups.setdefault(key, []).append(index)
        for members in groups.values():
            outcomes = self._run_group([requests[i] for i in members])
            for index, outcome in zip(members, outcomes, strict=True):
                results[index] = outcome
        return results

    def check(self, inputs: Mapping[str, Array]) -> None:
        """Raise ``RequestError`` saying what is wrong with one request's inputs."""
        batch_sizes: set[int] = set()
        for tensor in self.spec.inputs:
            array = inputs.get(tensor.name)
            if array is None:
                raise RequestError(f"input {tensor.name!r} is missing")
            if array.dtype != tensor.dtype:
                given = NUMPY_TO_TRITON.get(array.dtype, str(array.dtype))
                raise RequestError(
                    f"input {tensor.name!r} has data type {given}; the model expects "
                    f"{tensor.data_type}"
                )
            expected = self._input_shapes[tensor.name]
            shape = array.shape[1:] if self.spec.batching else array.shape
            if self.spec.batching and array.ndim:
                batch_sizes.add(array.shape[0])
            fits = len(shape) == len(expected) and all(
                e is None or e == s for e, s in zip(expected, shape, strict=True)
            )
            if not fits or (self.spec.batching and array.ndim == 0):
                raise RequestError(
                    f"input {tensor.name!r} has shape {list(array.shape)}; the model expects "
                    f"{format_shape(expected, batch=self.spec.batching)}"
                    + (" where N is the batch size" if self.spec.batching else "")
                )
        if len(batch_sizes) > 1:
            raise RequestError(
                f"inputs disagree on the batch size (first dimension): {sorted(batch_sizes)}"
            )

    def _group_key(self, inputs: Mapping[str, Array]) -> tuple[object, ...]:
        """Requests can share one session.run when every input has the same per-item shape."""
        return tuple(inputs[name].shape[1:] for name in self._input_shapes)

    def _run_group(
        self, group: Sequence[Mapping[str, Array]]
    ) -> list[dict[str, Array] | BackendError]:
        """Run requests of one shape as one batch (or one unbatched request) and split back."""
        names = list(self._input_shapes)
        if len(group) == 1:
            feed = dict(group[0])
        else:
            feed = {name: np.concatenate([inputs[name] for inputs in group]) for name in names}
        sizes = [len(inputs[names[0]]) for inputs in group] if self.spec.batching else []
        try:
            outputs = self._session.run(self._output_names, feed)
        except Exception as exc:  # ONNX Runtime raises its own exception types for any failure.
            error = ExecutionError(f"ONNX Runtime failed to run model {self.spec.name!r}: {exc}")
            return [error] * len(group)
        produced = dict(zip(self._output_names, outputs, strict=True))
        try:
            self._check_outputs(produced, batch=sum(sizes))
        except ExecutionError as error:
            return [error] * len(group)
        if len(group) == 1:
            return [produced]
        results: list[dict[str, Array] | BackendError] = []
        start = 0
        for size in sizes:
            results.append({name: array[start : start + size] for name, array in produced.items()})
            start += size
        return results

    def _check_outputs(self, produced: Mapping[str, Array], *, batch: int) -> None:
        for name, array in produced.items():
            expected = self._output_shapes[name]
            shape = array.shape
            if self.spec.batching:
                if not shape or shape[0] != batch:
                    raise ExecutionError(
                        f"output {name!r} has shape {list(shape)}, whose first dimension should "
                        f"be the batch size {batch}"
                    )
                shape = shape[1:]
            fits = len(shape) == len(expected) and all(
                e is None or e == s for e, s in zip(expected, shape, strict=True)
            )
            if not fits:
                raise ExecutionError(
                    f"output {name!r} has shape {list(array.shape)} but config.pbtxt declares "
                    f"{format_shape(expected, batch=self.spec.batching)}"
                )


def create_session(model_path: Path, settings: SessionSettings) -> ort.InferenceSession:
    """The session as this backend runs it (the throughput bench's in-process baseline uses the
    same, so the two sides differ only in what surrounds the model)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ONNX Runtime raises its own exception types for unreadable files.
        raise ModelConfigError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
