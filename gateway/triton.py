"""The gateway's only way to Triton: one async gRPC channel per process, shared by all requests.

Why a wrapper around ``tritonclient.grpc.aio`` rather than the client itself:

- Models describe themselves. Inputs, outputs, dtypes and ``max_batch_size`` come from Triton's
  model metadata and configuration, fetched once and cached for ``config_ttl_s`` seconds, so a
  request costs one ``ModelInfer`` round trip and a model folder dropped into the repository is
  picked up without a restart.
- No silent casts. A tensor whose dtype or shape does not match the model's declaration is a
  programming error in the pipeline that built it (the built-in pipelines produce exactly the
  declared dtype), so it fails loudly with :class:`~gateway.errors.InternalError` naming the
  model, the input, what was declared and what was given, instead of being converted on the way.
- Volumes do not fit one request. Inputs are split into batches of at most ``max_batch_size``
  that are sent concurrently (bounded, so a 300-slice volume does not hold 300 serialised copies
  at once) and Triton's dynamic batcher merges them with other requests' work; the answers are
  written back in order into one preallocated array per output.
- Errors mean something to the caller: Triton down -> 503, deadline passed -> 504, unknown model
  -> 404, model not ready -> 503, the model itself failed -> 502 with Triton's message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from gateway.errors import (
    ApiError,
    InternalError,
    InvalidModelOutput,
    ModelError,
    ModelNotFound,
    ModelNotReady,
    TritonTimeout,
    TritonUnavailable,
)

CONTROL_TIMEOUT_S = 5.0
"""Readiness, metadata and index calls are small; a hung Triton must not hang health checks."""

BatchSink = Callable[[int, int, dict[str, np.ndarray]], Awaitable[None]]
"""``await sink(start, stop, outputs)``: one batch's outputs (items ``start:stop``)."""

_CONNECTION_HINTS = (
    "failed to connect",
    "connection refused",
    "socket closed",
    "dns resolution failed",
    "connection reset",
    "broken pipe",
    "connect failed",
    "unreachable",
)
"""gRPC reports a dead server and Triton reports an unready model with the same UNAVAILABLE code;
these fragments of gRPC's own messages tell the first apart."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton declares it; ``shape`` excludes the batch dimension."""

    name: str
    datatype: str
    """Triton's name for the dtype: ``FP32``, ``UINT8``, ``BYTES``..."""
    shape: tuple[int, ...]
    """-1 where any size is allowed."""
    optional: bool = False

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = np.dtype(triton_to_np_dtype(self.datatype))
        return dtype

    def describe(self) -> str:
        return f"{self.name} ({self.datatype} {dims_text(self.shape)})"


def dims_text(shape: tuple[int, ...], *, batch: bool = False) -> str:
    """A tensor shape as messages write it: ``[N, 1, ?, ?]``, with ``?`` where any size is
    allowed (-1) and ``N`` first for the batch when there is one."""
    dims = ["?" if d < 0 else str(d) for d in shape]
    return "[" + ", ".join(["N", *dims] if batch else dims) + "]"


@dataclass(frozen=True)
class ModelConfig:
    """What the gateway knows about one loaded model: metadata plus configuration."""

    name: str
    versions: tuple[str, ...]
    max_batch_size: int
    """0: the model takes no batch dimension and each call sends the arrays as they are."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: Mapping[str, str] = field(default_factory=dict)
    """The config's ``parameters`` (``string_value`` of each), e.g. ``aicoco.task``."""
    platform: str = ""
    backend: str = ""
    raw_config: Mapping[str, Any] = field(default_factory=dict)
    """The whole configuration as Triton's JSON, to tell whether a reload changed anything."""

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    @classmethod
    def from_triton(cls, metadata: Mapping[str, Any], config: Mapping[str, Any]) -> ModelConfig:
        """Build from ``get_model_metadata`` and ``get_model_config`` answers (``as_json=True``).

        Metadata is the authority on tensors (it reflects auto-completed configs); the config adds
        ``max_batch_size``, optional inputs and parameters.
        """
        max_batch_size = int(config.get("max_batch_size", 0))
        optional = {
            str(entry.get("name")) for entry in config.get("input", []) if entry.get("optional")
        }

        def specs(entries: Iterable[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
            result = []
            for entry in entries:
                shape = tuple(int(d) for d in entry.get("shape", []))
                if max_batch_size > 0:
                    shape = shape[1:]
                name = str(entry["name"])
                result.append(
                    TensorSpec(name, str(entry["datatype"]), shape, optional=name in optional)
                )
            return tuple(result)

        parameters = {
            str(key): str(value.get("string_value", ""))
            for key, value in dict(config.get("parameters", {})).items()
        }
        return cls(
            name=str(metadata.get("name") or config.get("name")),
            versions=tuple(str(v) for v in metadata.get("versions", [])),
            max_batch_size=max_batch_size,
            inputs=specs(metadata.get("inputs", [])),
            outputs=specs(metadata.get("outputs", [])),
            parameters=parameters,
            platform=str(config.get("platform", "")),
            backend=str(config.get("backend", "")),
            raw_config=dict(config),
        )


@dataclass(frozen=True)
class ModelState:
    """One entry of Triton's repository index: every model folder, loaded or not."""

    name: str
    version: str
    state: str
    """``READY``, ``UNAVAILABLE``, ``LOADING``, ``UNLOADING`` or empty (never loaded)."""
    reason: str


def map_triton_error(exc: InferenceServerException, model: str | None) -> ApiError:
    """Turn Triton's or gRPC's failure into the error the client should see."""
    status = str(exc.status() or "")
    message = str(exc.message() or exc)
    lowered = message.lower()
    subject = f"model '{model}'" if model else "Triton"
    details: dict[str, Any] = {"triton_status": status.removeprefix("StatusCode.")}
    if model:
        details["model"] = model
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return TritonTimeout(f"{subject} did not answer in time: {message}", details=details)
    if status == "StatusCode.UNAVAILABLE" and any(hint in lowered for hint in _CONNECTION_HINTS):
        return TritonUnavailable(f"Triton is unreachable: {message}", details=details)
    if "unknown model" in lowered and "not found" in lowered:
        return ModelNotFound(f"model '{model}' is not served by Triton", details=details)
    if status in ("StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE") and model:
        return ModelNotReady(f"{subject} is not ready: {message}", details=details)
    if status == "StatusCode.UNAVAILABLE":
        return TritonUnavailable(f"Triton is unavailable: {message}", details=details)
    return ModelError(f"{subject} failed: {message}", details=details)


class GrpcClient(Protocol):
    """What :class:`TritonClient` uses of ``tritonclient.grpc.aio.InferenceServerClient``: a test
    passes an object with these methods to produce failures a healthy Triton never shows."""

    async def is_server_live(self, **kwargs: Any) -> Any: ...

    async def is_server_ready(self, **kwargs: Any) -> Any: ...

    async def is_model_ready(self, model_name: str, **kwargs: Any) -> Any: ...

    async def get_model_repository_index(self, **kwargs: Any) -> Any: ...

    async def get_model_metadata(self, model_name: str, **kwargs: Any) -> Any: ...

    async def get_model_config(self, model_name: str, **kwargs: Any) -> Any: ...

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> Any: ...

    async def close(self) -> None: ...


class TritonClient:
    """Async gRPC client for one Triton server; create it once, inside the running event loop.

    ``timeout_s`` bounds each ``infer`` call as a whole (all its batches share one deadline).
    ``grpc`` replaces the gRPC client made for ``url`` (tests).
    """

    def __init__(
        self,
        url: str,
        timeout_s: float,
        *,
        config_ttl_s: float = 5.0,
        max_concurrent_batches: int = 8,
        grpc: GrpcClient | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}")
        self.url = url
        self.timeout_s = timeout_s
        self._config_ttl_s = config_ttl_s
        self._max_concurrent_batches = max_concurrent_batches
        self._control_timeout_s = min(timeout_s, CONTROL_TIMEOUT_S)
        self._client: GrpcClient = grpc if grpc is not None else grpcaio.InferenceServerClient(url)
        self._configs: dict[str, tuple[float, ModelConfig]] = {}
        self._fetching: dict[str, asyncio.Future[ModelConfig]] = {}

    async def close(self) -> None:
        await self._client.close()

    async def server_live(self) -> bool:
        """False when Triton cannot be reached: liveness of the server, not of the gateway."""
        try:
            return bool(await self._client.is_server_live(client_timeout=self._control_timeout_s))
        except InferenceServerException:
            return False

    async def server_ready(self) -> bool:
        """False when Triton cannot be reached or is not ready; never raises for that."""
        try:
            return bool(await self._client.is_server_ready(client_timeout=self._control_timeout_s))
        except InferenceServerException:
            return False

    async def model_ready(self, name: str) -> bool:
        """False for a model that is unknown or not loaded; raises TritonUnavailable if down."""
        try:
            ready = await self._client.is_model_ready(name, client_timeout=self._control_timeout_s)
        except InferenceServerException as exc:
            error = map_triton_error(exc, name)
            if isinstance(error, ModelNotFound | ModelNotReady):
                return False
            raise error from None
        return bool(ready)

    async def repository_index(self) -> list[ModelState]:
        """Every model folder Triton knows about, including the ones that failed to load."""
        try:
            index = await self._client.get_model_repository_index(
                as_json=True, client_timeout=self._control_timeout_s
            )
        except InferenceServerException as exc:
            raise map_triton_error(exc, None) from None
        return [
            ModelState(
                name=str(entry.get("name", "")),
                version=str(entry.get("version", "")),
                state=str(entry.get("state", "")),
                reason=str(entry.get("reason", "")),
            )
            for entry in index.get("models", [])
        ]

    def forget(self, name: str) -> None:
        """Drop the cached configuration so the next call asks Triton again."""
        self._configs.pop(name, None)

    async def model_config(self, name: str) -> ModelConfig:
        """The model's metadata and configuration, from cache when younger than the TTL.

        Raises ModelNotFound for a name Triton's repository does not hold, ModelNotReady for one
        it holds but has not loaded (with Triton's reason), TritonUnavailable when Triton is down
        and TritonTimeout when it does not answer within the control timeout.

        One fetch per model at a time, whose result or failure serves every request that asks
        meanwhile: with a hung Triton, N waiters get their 504 together after one timeout, not
        one after another after N of them. A waiter that gives up (its client hung up) leaves the
        fetch running for the others.
        """
        if cached := self._fresh(name):
            return cached
        fetch = self._fetching.get(name)
        if fetch is None:
            fetch = asyncio.ensure_future(self._fetch_and_cache(name))
            self._fetching[name] = fetch
            fetch.add_done_callback(lambda done: self._fetched(name, done))
        return await asyncio.shield(fetch)

    def _fetched(self, name: str, fetch: asyncio.Future[ModelConfig]) -> None:
        if self._fetching.get(name) is fetch:
            del self._fetching[name]
        if not fetch.cancelled():
            fetch.exception()  # retrieved: every waiter may have left before it ended

    async def _fetch_and_cache(self, name: str) -> ModelConfig:
        try:
            async with asyncio.timeout(self._control_timeout_s):
                config = await self._fetch_config(name)
        except TimeoutError:
            raise TritonTimeout(
                f"Triton did not describe model '{name}' within {self._control_timeout_s:g} s",
                details={"model": name},
            ) from None
        self._configs[name] = (time.monotonic(), config)
        return config

    def _fresh(self, name: str) -> ModelConfig | None:
        entry = self._configs.get(name)
        if entry is None or time.monotonic() - entry[0] >= self._config_ttl_s:
            return None
        return entry[1]

    async def _fetch_config(self, name: str) -> ModelConfig:
        if not await self.model_ready(name):
            raise await self._not_ready_error(name)
        try:
            metadata, config = await asyncio.gather(
                self._client.get_model_metadata(
                    name, as_json=True, client_timeout=self._control_timeout_s
                ),
                self._client.get_model_config(
                    name, as_json=True, client_timeout=self._control_timeout_s
                ),
            )
        except InferenceServerException as exc:
            raise map_triton_error(exc, name) from None
        return ModelConfig.from_triton(metadata, config.get("config", {}))

    async def _not_ready_error(self, name: str) -> ApiError:
        states = [state for state in await self.repository_index() if state.name == name]
        if not states:
            return ModelNotFound(
                f"model '{name}' is not in Triton's model repository",
                details={"model": name},
            )
        reasons = "; ".join(
            f"version {s.version or '?'}: {s.state or 'not loaded'}"
            + (f" ({s.reason})" if s.reason else "")
            for s in states
        )
        return ModelNotReady(
            f"model '{name}' is not ready: {reasons}",
            details={"model": name, "states": [s.state for s in states]},
        )

    async def infer(
        self, name: str, inputs: Mapping[str, np.ndarray], *, request_id: str = ""
    ) -> dict[str, np.ndarray]:
        """Run the model on ``inputs`` (each with a leading batch dimension of the same size N).

        Returns every declared output with the same leading N, in input order. For a model with
        ``max_batch_size`` 0 the arrays are sent and returned unchanged in one call.
        """
        config = await self.model_config(name)
        arrays = check_inputs(config, inputs)
        if config.max_batch_size == 0:
            deadline = time.monotonic() + self.timeout_s
            result = await self._infer_once(config, arrays, deadline, request_id)
            return {spec.name: result[spec.name] for spec in config.outputs}
        assembler = _Assembler(config, _batch_size(arrays))

        async def put(start: int, stop: int, result: dict[str, np.ndarray]) -> None:
            assembler.put(start, stop, result)

        await self._infer_batches(config, arrays, put, request_id)
        return assembler.result()

    async def infer_each(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        sink: BatchSink,
        *,
        request_id: str = "",
    ) -> None:
        """Like :meth:`infer` for a batching model, but each batch's outputs go to
        ``await sink(start, stop, outputs)`` as they arrive (in any order) instead of into one
        array: a caller that reduces each batch (a volume's probability maps into masks) never
        holds the whole output. The sink runs while its batch holds one of the
        ``max_concurrent_batches`` slots, so at most that many answers wait to be consumed.
        """
        config = await self.model_config(name)
        if config.max_batch_size < 1:
            raise InternalError(
                f"model '{name}' has no batch dimension (max_batch_size 0); call infer()",
                details={"model": name},
            )

        async def checked(start: int, stop: int, outputs: dict[str, np.ndarray]) -> None:
            _check_batch(config, start, stop, outputs)
            await sink(start, stop, outputs)

        await self._infer_batches(config, check_inputs(config, inputs), checked, request_id)

    async def _infer_batches(
        self,
        config: ModelConfig,
        arrays: Mapping[str, np.ndarray],
        sink: BatchSink,
        request_id: str,
    ) -> None:
        """Batches of at most ``max_batch_size``, sent concurrently under one deadline. The sink
        checks each batch's shapes (:func:`_check_batch`)."""
        deadline = time.monotonic() + self.timeout_s
        total = _batch_size(arrays)
        semaphore = asyncio.Semaphore(self._max_concurrent_batches)

        async def run(start: int, stop: int) -> None:
            async with semaphore:
                part = {key: value[start:stop] for key, value in arrays.items()}
                result = await self._infer_once(config, part, deadline, request_id)
                await sink(start, stop, result)

        if total <= config.max_batch_size:
            await run(0, total)
            return
        await gather_or_cancel(
            run(start, min(start + config.max_batch_size, total))
            for start in range(0, total, config.max_batch_size)
        )

    async def _infer_once(
        self,
        config: ModelConfig,
        arrays: Mapping[str, np.ndarray],
        deadline: float,
        request_id: str,
    ) -> dict[str, np.ndarray]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TritonTimeout(
                f"model '{config.name}' did not answer within {self.timeout_s:g} s",
                details={"model": config.name},
            )
        infer_inputs = []
        for key, array in arrays.items():
            spec = config.input(key)
            assert spec is not None
            infer_input = grpcclient.InferInput(key, list(array.shape), spec.datatype)
            infer_input.set_data_from_numpy(array)
            infer_inputs.append(infer_input)
        try:
            response = await self._client.infer(
                config.name, infer_inputs, request_id=request_id, client_timeout=remaining
            )
        except InferenceServerException as exc:
            error = map_triton_error(exc, config.name)
            if isinstance(error, ModelNotFound | ModelNotReady | ModelError):
                self.forget(config.name)
            raise error from None
        return read_outputs(config, response.as_numpy)


def check_inputs(config: ModelConfig, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate names, dtypes and shapes against the model's declaration; never cast."""
    model = config.name
    declared = ", ".join(spec.describe() for spec in config.inputs) or "none"
    unknown = sorted(set(inputs) - {spec.name for spec in config.inputs})
    if unknown:
        raise InternalError(
            f"the pipeline sent input(s) {unknown} that model '{model}' does not declare; "
            f"its inputs are: {declared}",
            details={"model": model},
        )
    arrays: dict[str, np.ndarray] = {}
    batch = 1 if config.max_batch_size > 0 else 0
    sizes = set()
    for spec in config.inputs:
        if spec.name not in inputs:
            if spec.optional:
                continue
            raise InternalError(
                f"the pipeline did not send input '{spec.name}' of model '{model}'; "
                f"its inputs are: {declared}",
                details={"model": model, "input": spec.name},
            )
        array = inputs[spec.name]
        if not isinstance(array, np.ndarray):
            raise InternalError(
                f"input '{spec.name}' of model '{model}' must be a numpy array, "
                f"got {type(array).__name__}",
                details={"model": model, "input": spec.name},
            )
        _check_dtype(model, spec, array)
        _check_shape(model, spec, array, batch)
        if batch:
            sizes.add(array.shape[0])
        arrays[spec.name] = array
    if len(sizes) > 1:
        raise InternalError(
            f"inputs of model '{model}' have different batch sizes {sorted(sizes)}",
            details={"model": model},
        )
    if sizes == {0}:
        raise InternalError(f"empty batch for model '{model}'", details={"model": model})
    return arrays


def _check_dtype(model: str, spec: TensorSpec, array: np.ndarray) -> None:
    if spec.datatype == "BYTES":
        if array.dtype == np.object_ or array.dtype.kind == "S":
            return
    elif array.dtype == spec.dtype:
        return
    raise InternalError(
        f"input '{spec.name}' of model '{model}' is {spec.datatype} but the pipeline gave "
        f"{array.dtype}; convert it explicitly in preprocess (e.g. "
        f"x.astype(np.{spec.dtype.name})): the gateway never casts silently",
        details={"model": model, "input": spec.name},
    )


def _check_shape(model: str, spec: TensorSpec, array: np.ndarray, batch: int) -> None:
    item = array.shape[batch:]
    matches = array.ndim == len(spec.shape) + batch and all(
        want < 0 or want == got for want, got in zip(spec.shape, item, strict=True)
    )
    if not matches:
        expected = dims_text(spec.shape, batch=bool(batch))
        raise InternalError(
            f"input '{spec.name}' of model '{model}' must have shape {expected}, "
            f"got {list(array.shape)}",
            details={"model": model, "input": spec.name},
        )


def read_outputs(config: ModelConfig, as_numpy: Any) -> dict[str, np.ndarray]:
    """Every declared output of one response, checked against the declared dtype."""
    outputs: dict[str, np.ndarray] = {}
    for spec in config.outputs:
        array = as_numpy(spec.name)
        if array is None:
            raise InvalidModelOutput(
                f"model '{config.name}' did not return its declared output '{spec.name}'",
                details={"model": config.name, "output": spec.name},
            )
        if spec.datatype != "BYTES" and array.dtype != spec.dtype:
            raise InvalidModelOutput(
                f"output '{spec.name}' of model '{config.name}' is declared {spec.datatype} "
                f"but came back as {array.dtype}",
                details={"model": config.name, "output": spec.name},
            )
        outputs[spec.name] = array
    return outputs


def _batch_size(arrays: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _check_batch(
    config: ModelConfig, start: int, stop: int, result: Mapping[str, np.ndarray]
) -> None:
    """Every output of one batch answers each of its ``stop - start`` items."""
    for name, part in result.items():
        if part.ndim == 0 or part.shape[0] != stop - start:
            raise InvalidModelOutput(
                f"output '{name}' of model '{config.name}' has shape "
                f"{list(part.shape)} for a batch of {stop - start}",
                details={"model": config.name, "output": name},
            )


class _Assembler:
    """Writes each batch's outputs into one preallocated array per output, in input order.

    Preallocating (rather than concatenating at the end) keeps peak memory at one copy of the
    outputs plus the batches in flight, which matters for a 3D volume's probability maps.
    """

    def __init__(self, config: ModelConfig, total: int) -> None:
        self._config = config
        self._total = total
        self._arrays: dict[str, np.ndarray] = {}
        self._filled = 0

    def put(self, start: int, stop: int, result: Mapping[str, np.ndarray]) -> None:
        _check_batch(self._config, start, stop, result)
        for name, part in result.items():
            target = self._arrays.get(name)
            if target is None:
                target = np.empty((self._total, *part.shape[1:]), dtype=part.dtype)
                self._arrays[name] = target
            elif target.shape[1:] != part.shape[1:]:
                raise InvalidModelOutput(
                    f"output '{name}' of model '{self._config.name}' changes shape between "
                    f"batches ({list(target.shape[1:])} then {list(part.shape[1:])}); the "
                    "gateway cannot reassemble variable-size outputs",
                    details={"model": self._config.name, "output": name},
                )
            target[start:stop] = part
        self._filled += stop - start

    def result(self) -> dict[str, np.ndarray]:
        assert self._filled == self._total, "every batch is written before the result is read"
        return {spec.name: self._arrays[spec.name] for spec in self._config.outputs}


async def gather_or_cancel(awaitables: Iterable[Awaitable[None]]) -> None:
    """Run all; on the first failure cancel the rest and raise that failure (not a group)."""
    tasks: Sequence[asyncio.Future[None]] = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
