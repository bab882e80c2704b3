"""The gateway's error vocabulary.

Errors are part of the API: every failure a client can see is one of these classes, each with a
stable machine-readable ``code`` and an HTTP ``status``. Messages tell the caller what to change.
The JSON body is ``{"error": {"code", "message", "request_id", "details"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class ApiError(Exception):
    """Base of every error that reaches a client as JSON."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    closes_connection: ClassVar[bool] = False
    """Answered with ``Connection: close``, without reading what is left of the body."""

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` for the 503s that are worth retrying)."""
        return {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        error["request_id"] = request_id
        if self.details:
            error["details"] = self.details
        return {"error": error}


# 400: the request itself cannot be parsed.
class MalformedRequest(ApiError):
    status = 400
    code = "malformed_request"


class MalformedMultipart(MalformedRequest):
    code = "malformed_multipart"


class MalformedJSON(MalformedRequest):
    code = "malformed_json"


class JSONTooDeep(MalformedJSON):
    """Arrays and objects nested past the limit: no AiCOCO field needs it, a parser bomb does."""

    code = "json_too_deep"


class JSONNumberTooLarge(MalformedJSON):
    code = "json_number_too_large"


class InvalidJSONText(MalformedJSON):
    """A ``\\uD800``-style escape without its pair: valid JSON syntax, but no character."""

    code = "invalid_json_text"


# 404
class ModelNotFound(ApiError):
    status = 404
    code = "model_not_found"


class RouteNotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


# 408
class UploadTimeout(ApiError):
    """The body stalled, or trickled in below ``UPLOAD_MIN_RATE``: the connection is closed."""

    status = 408
    code = "upload_timeout"
    closes_connection = True


# 413: limits.
class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class TooManyFiles(PayloadTooLarge):
    code = "too_many_files"


class ImageTooLarge(PayloadTooLarge):
    """More pixels than the configured bound: a decompression bomb or a volume we won't hold."""

    code = "image_too_large"


# 415
class UnsupportedFileType(ApiError):
    status = 415
    code = "unsupported_file_type"


class UnsupportedMediaType(ApiError):
    """The request body is not ``multipart/form-data``."""

    status = 415
    code = "unsupported_media_type"


# 422: well-formed, but not something we can run.
class InvalidInput(ApiError):
    status = 422
    code = "invalid_input"


class InvalidAiCOCO(InvalidInput):
    code = "invalid_aicoco"


class FileMismatch(InvalidInput):
    """Uploaded files and ``images`` entries do not pair up one to one by exact name."""

    code = "file_mismatch"


class UnreadableFile(InvalidInput):
    code = "unreadable_file"


class InconsistentSeries(InvalidInput):
    code = "inconsistent_series"


class UnsupportedImage(InvalidInput):
    """A readable file whose content the model cannot take (wrong channels, bit depth...)."""

    code = "unsupported_image"


# 5xx
class InternalError(ApiError):
    status = 500
    code = "internal_error"


class InvalidModelOutput(ApiError):
    """The model answered, but not in the shape or range its configuration declares."""

    status = 500
    code = "invalid_model_output"


class ModelError(ApiError):
    """Triton ran the model and the model failed."""

    status = 502
    code = "model_error"


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"
    retry_after_s: ClassVar[int] = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ServerBusy(ServiceUnavailable):
    code = "server_busy"


class TritonUnavailable(ServiceUnavailable):
    code = "triton_unavailable"
    retry_after_s = 5


class ModelNotReady(ServiceUnavailable):
    code = "model_not_ready"
    retry_after_s = 5


class TritonTimeout(ApiError):
    status = 504
    code = "triton_timeout"


class InvalidModelConfig(ApiError):
    """The model's ``config.pbtxt`` parameters (``aicoco.*``) or tensors don't fit its pipeline.

    The deployment's mistake, not the client's, and retrying won't help: 500 with the model and
    the parameter named.
    """

    status = 500
    code = "invalid_model_config"
