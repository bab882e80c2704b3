"""Triton's and gRPC's failures as the gateway's errors: down, timed out, unknown, unready,
failed."""

from __future__ import annotations

from typing import Any

from tritonclient.utils import InferenceServerException

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

RAISES: tuple[type[ApiError], ...] = (
    TritonUnavailable,
    TritonTimeout,
    ModelNotFound,
    ModelNotReady,
    ModelError,
    InvalidModelOutput,
    InternalError,
)
"""What a call to Triton can raise: a failure as :func:`map_triton_error` names it, outputs that
are not what the model declares (:class:`InvalidModelOutput`), inputs a pipeline built wrongly
(:class:`InternalError`)."""

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
