"""The client a request uses: cached model descriptions, typed calls, batches sent concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from gateway.errors import (
    ApiError,
    InternalError,
    ModelError,
    ModelNotFound,
    ModelNotReady,
    TritonTimeout,
)
from gateway.triton.batching import (
    Assembler,
    BatchSink,
    batch_size,
    check_batch,
    check_inputs,
    gather_or_cancel,
    read_outputs,
)
from gateway.triton.errors import map_triton_error
from gateway.triton.types import ModelConfig, ModelState

CONTROL_TIMEOUT_S = 5.0
"""Readiness, metadata and index calls are small; a hung Triton must not hang health checks."""


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

    @property
    def max_concurrent_batches(self) -> int:
        """Batches of one call in flight at once: a caller that sends its own batches (a
        volume's patches) keeps to the same bound."""
        return self._max_concurrent_batches

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
        assembler = Assembler(config, batch_size(arrays))

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
            check_batch(config, start, stop, outputs)
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
        checks each batch's shapes (:func:`check_batch`)."""
        deadline = time.monotonic() + self.timeout_s
        total = batch_size(arrays)
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
