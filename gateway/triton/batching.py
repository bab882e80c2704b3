"""Inputs checked against the declaration, split into batches, and the answers put back in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from gateway.errors import InternalError, InvalidModelOutput
from gateway.triton.types import ModelConfig, TensorSpec, dims_text

BatchSink = Callable[[int, int, dict[str, np.ndarray]], Awaitable[None]]
"""``await sink(start, stop, outputs)``: one batch's outputs (items ``start:stop``)."""


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


def batch_size(arrays: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def check_batch(
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


class Assembler:
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
        check_batch(self._config, start, stop, result)
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
