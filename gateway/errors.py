"""The gateway's error vocabulary: each class declares its status, code, and when it happens and
what the client should change.

Errors are part of the API. Every failure a client can see is one of these classes, and the
error table of ``docs/errors.md``, ``x-error-codes`` in ``/openapi.json`` and ``/docs`` are all
generated from them (:func:`error_classes`), so a new error is documented by being declared.
Messages add the particulars: which file, which limit, which model. The JSON body is
``{"error": {"code", "message", "request_id", "details"}}``.

The tree, by HTTP status (catch a parent to catch its children)::

    ApiError
    ├── MalformedRequest                 400 malformed_request
    │   ├── MalformedMultipart               malformed_multipart
    │   ├── MalformedJSON                    malformed_json
    │   │   ├── JSONTooDeep                  json_too_deep
    │   │   ├── JSONNumberTooLarge           json_number_too_large
    │   │   └── InvalidJSONText              invalid_json_text
    │   └── InvalidParameter                 invalid_parameter
    ├── Unauthorized                     401 unauthorized
    ├── ModelNotFound                    404 model_not_found
    ├── RouteNotFound                    404 not_found
    ├── StudyNotFound                    404 study_not_found
    ├── ArtifactNotFound                 404 artifact_not_found
    ├── JobNotFound                      404 job_not_found
    ├── MethodNotAllowed                 405 method_not_allowed
    ├── UploadTimeout                    408 upload_timeout (closes the connection)
    ├── JobResultUnavailable             409 job_result_unavailable
    ├── PayloadTooLarge                  413 payload_too_large
    │   ├── TooManyFiles                     too_many_files
    │   ├── ImageTooLarge                    image_too_large
    │   ├── VolumeTooLarge                   volume_too_large
    │   └── TableTooLarge                    table_too_large
    ├── UnsupportedFileType              415 unsupported_file_type
    ├── UnsupportedTableFormat           415 unsupported_table_format
    ├── UnsupportedMediaType             415 unsupported_media_type
    ├── InvalidInput                     422 invalid_input
    │   ├── InvalidAiCOCO                    invalid_aicoco
    │   ├── FileMismatch                     file_mismatch
    │   ├── UnreadableFile                   unreadable_file
    │   ├── InconsistentSeries               inconsistent_series
    │   ├── UnsupportedImage                 unsupported_image
    │   ├── VolumeRequired                   volume_required
    │   ├── GeometryRequired                 geometry_required
    │   ├── DicomInputRequired               dicom_input_required
    │   ├── NoSuitableSeries                 no_suitable_series
    │   ├── CallbackNotAllowed               callback_not_allowed
    │   ├── WrongInputKind                   wrong_input_kind
    │   ├── InvalidTable                     invalid_table
    │   ├── TableColumnMismatch              table_columns
    │   ├── TableValueError                  table_value
    │   └── TableWindowMismatch              table_window
    ├── InternalError                    500 internal_error
    ├── InvalidModelOutput               500 invalid_model_output
    ├── InvalidModelConfig               500 invalid_model_config
    ├── JobInterrupted                   500 job_interrupted
    ├── ModelError                       502 model_error
    ├── PacsError                        502 pacs_error
    ├── ServiceUnavailable               503 (catches the five below; Retry-After)
    │   ├── ServerBusy                       server_busy
    │   ├── TritonUnavailable                triton_unavailable
    │   ├── ModelNotReady                    model_not_ready
    │   ├── PacsUnavailable                  pacs_unavailable
    │   └── JobStoreUnavailable              job_store_unavailable
    ├── TritonTimeout                    504 triton_timeout
    └── PacsTimeout                      504 pacs_timeout

A test checks this drawing against the classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from gateway.schemas import ErrorBody, ErrorContent


class _Declared(type):
    """Refuses, before it exists, an error class that does not declare its own documentation."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> _Declared:
        if any(isinstance(base, _Declared) for base in bases):
            # A parent-only class is never sent, so it has no code or text of its own.
            documented = () if namespace.get("parent") else ("code", "when", "fix")
            missing = [key for key in documented if key not in namespace]
            if "status" not in namespace and not any(hasattr(b, "status") for b in bases):
                missing.append("status")
            if missing:
                raise TypeError(f"error class {name} must declare {', '.join(missing)}")
        return super().__new__(mcs, name, bases, namespace, **kwargs)


class ApiError(Exception, metaclass=_Declared):
    """Base of every error that reaches a client as JSON; never raised itself.

    A subclass declares ``code``, ``when`` and ``fix`` in its own body (checked as the class
    statement runs, so an undocumented error cannot exist) and inherits ``status`` from its
    parent unless it declares its own.
    """

    status: ClassVar[int]
    code: ClassVar[str]
    when: ClassVar[str]
    """When the error happens, in the client's terms."""
    fix: ClassVar[str]
    """What the client (or the operator) should change."""
    closes_connection: ClassVar[bool] = False
    """Answered with ``Connection: close``, without reading what is left of the body."""
    parent: ClassVar[bool] = False
    """A class to catch its children by, never raised itself: it has no code of its own."""

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` for the 503s that are worth retrying)."""
        return {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        """The JSON answer, as :class:`~gateway.schemas.ErrorBody` declares it."""
        content = ErrorContent(
            code=self.code, message=self.message, request_id=request_id, details=self.details
        )
        return ErrorBody(error=content).model_dump(
            mode="json", exclude=None if self.details else {"error": {"details"}}
        )


def error_classes() -> Iterator[type[ApiError]]:
    """Every error class a client can see, each followed by its children, as drawn above
    (parent-only classes left out)."""
    return (cls for cls in _descendants(ApiError) if not cls.__dict__.get("parent"))


def _descendants(cls: type[ApiError]) -> Iterator[type[ApiError]]:
    for child in cls.__subclasses__():
        yield child
        yield from _descendants(child)


# 400: the request itself cannot be parsed.
class MalformedRequest(ApiError):
    status = 400
    code = "malformed_request"
    when = (
        "The request is not valid HTTP/1.1 or its headers cannot be used, e.g. a "
        "Content-Length that is not a number."
    )
    fix = "Let an HTTP library build the request."


class MalformedMultipart(MalformedRequest):
    code = "malformed_multipart"
    when = (
        "The body is not valid multipart/form-data: no boundary, a part without a name, a body "
        "cut short before its closing boundary."
    )
    fix = "Let an HTTP library build the multipart body; check the upload was not interrupted."


class MalformedJSON(MalformedRequest):
    code = "malformed_json"
    when = "A field besides 'files' (images, meta, data...) is not valid JSON."
    fix = 'Send every field as JSON text; a plain string goes in quotes ("text").'


class JSONTooDeep(MalformedJSON):
    """Arrays and objects nested past the limit: no AiCOCO field needs it, a parser bomb does."""

    code = "json_too_deep"
    when = "A JSON field nests arrays and objects more than 32 levels deep."
    fix = "Send AiCOCO fields as documented; they need a few levels, not hundreds."


class JSONNumberTooLarge(MalformedJSON):
    code = "json_number_too_large"
    when = "A JSON number has more than 64 characters, or is a float beyond 64-bit range."
    fix = "Send numbers that fit a 64-bit float; send long identifiers as strings."


class InvalidJSONText(MalformedJSON):
    """A ``\\uD800``-style escape without its pair: valid JSON syntax, but no character."""

    code = "invalid_json_text"
    when = "A JSON string holds half of a UTF-16 surrogate pair (an escape like \\ud800 alone)."
    fix = "Send the text as UTF-8, or escape both halves of the pair."


class InvalidParameter(MalformedRequest):
    code = "invalid_parameter"
    when = (
        "A query parameter has a value the route does not take, e.g. `window=wide` on "
        "/viewer/render."
    )
    fix = "Send one of the values the message lists."


class Unauthorized(ApiError):
    """No API key, or one the gateway does not know, on a route that needs one."""

    status = 401
    code = "unauthorized"
    when = (
        "API keys are configured (API_KEYS, API_KEYS_FILE) and the request has none, or one "
        "that is not configured, on a route that takes or returns patient data."
    )
    fix = "Send the key as `Authorization: Bearer <key>` or `X-API-Key: <key>`."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="aicoco-gateway"'}


# 404
class ModelNotFound(ApiError):
    status = 404
    code = "model_not_found"
    when = "No model of that name in Triton's model repository."
    fix = "Pick a name from GET /models, or add the model folder to the repository."


class RouteNotFound(ApiError):
    status = 404
    code = "not_found"
    when = "No route at this path."
    fix = "See /docs for the routes."


class StudyNotFound(ApiError):
    status = 404
    code = "study_not_found"
    when = "The DICOMweb server has no study (or series) with the UID asked for."
    fix = "Check the UIDs against the PACS; the message names the one it lacks."


class ArtifactNotFound(ApiError):
    status = 404
    code = "artifact_not_found"
    when = (
        "GET /invocations/artifacts/{name}: no such records artifact, a name outside "
        "records_<21 characters>.jsonl, or one removed after RECORDS_RETENTION_S or by "
        "RECORDS_MAX_BYTES."
    )
    fix = "Fetch the href of a recent answer soon after it; run the request again if it expired."


class JobNotFound(ApiError):
    status = 404
    code = "job_not_found"
    when = (
        "GET or DELETE /jobs/{id}: no such job, one removed after JOB_RETENTION_S or by "
        "JOB_MAX_BYTES (or by a DELETE after it ended), or another API key's job."
    )
    fix = (
        "Use the id (the Location) the submission answered, with the key that submitted it; "
        "fetch results before JOB_RETENTION_S runs out."
    )


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"
    when = "The route exists but not with this HTTP method."
    fix = "Use the method listed in the Allow header."


# 408
class UploadTimeout(ApiError):
    status = 408
    code = "upload_timeout"
    closes_connection = True
    when = (
        "The body stalled for UPLOAD_IDLE_TIMEOUT_S, or arrived slower than UPLOAD_MIN_RATE "
        "over such a window; the connection is closed."
    )
    fix = "Check the client's network; send fewer files per request on a slow link."


# 409
class JobResultUnavailable(ApiError):
    status = 409
    code = "job_result_unavailable"
    when = (
        "GET /jobs/{id}/result of a job that has no result: still queued or running (details "
        "give its state), or it failed or was cancelled."
    )
    fix = (
        "Poll GET /jobs/{id} until its state is succeeded (or give a callback); a failed job's "
        "status holds its error."
    )


# 413: limits.
class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    when = "The body is larger than MAX_REQUEST_BYTES, or the JSON fields are too large."
    fix = "Send fewer or smaller files per request, or raise MAX_REQUEST_BYTES."


class TooManyFiles(PayloadTooLarge):
    code = "too_many_files"
    when = "More 'files' parts than MAX_FILES."
    fix = "Split the series over several requests, or raise MAX_FILES."


class ImageTooLarge(PayloadTooLarge):
    """More pixels than the configured bound: a decompression bomb or a volume we won't hold."""

    code = "image_too_large"
    when = (
        "A frame has more pixels than MAX_PIXELS_PER_IMAGE, or the request more than "
        "MAX_TOTAL_VOXELS (a decompression bomb, or a volume too large to hold)."
    )
    fix = "Downsample or crop the images, or raise the limits."


class VolumeTooLarge(PayloadTooLarge):
    """Refused before any patch is sent: the blend's accumulator grows with the volume."""

    code = "volume_too_large"
    when = (
        "The volume a volumetric model works on (the series resampled to its spacing, padded "
        "to its patch) has more voxels than MAX_VOLUME_VOXELS."
    )
    fix = "Crop the series to the region of interest, or raise MAX_VOLUME_VOXELS."


class TableTooLarge(PayloadTooLarge):
    code = "table_too_large"
    when = (
        "A table is over a bound: bytes (MAX_TABLE_BYTES), rows (MAX_TABLE_ROWS), columns "
        "(MAX_TABLE_COLUMNS) or characters in one cell (MAX_TABLE_CELL_CHARS)."
    )
    fix = "Split the table over several requests, or raise the limit the message names."


# 415
class UnsupportedFileType(ApiError):
    status = 415
    code = "unsupported_file_type"
    when = "A file is of no format the readers know; the message lists those they do."
    fix = "Convert the file to one of the formats the message lists."


class UnsupportedTableFormat(ApiError):
    status = 415
    code = "unsupported_table_format"
    when = "A table is not CSV (.csv) or TSV (.tsv): a spreadsheet (.xlsx, .xls, .ods) or other."
    fix = "Export the sheet as UTF-8 CSV."


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"
    when = "The body is not multipart/form-data."
    fix = "Send multipart/form-data with repeated 'files' parts and an 'images' field."


# 422: well-formed, but not something we can run.
class InvalidInput(ApiError):
    status = 422
    code = "invalid_input"
    when = (
        "The request is well-formed but unusable: a file name that is a path ('a/b.png', "
        "'../x', backslashes, control characters), a 'files' part without a filename, a field "
        "sent twice."
    )
    fix = (
        "Send plain base names, the same in the files and in the images entries; send each "
        "field once."
    )


class InvalidAiCOCO(InvalidInput):
    code = "invalid_aicoco"
    when = (
        "The images entries are missing or not valid AiCOCO: not a list, empty, an entry "
        "without id/file_name/index, a wrong type (index not an integer), duplicate ids."
    )
    fix = "Fix the entries; details.errors lists each problem with its location."


class FileMismatch(InvalidInput):
    code = "file_mismatch"
    when = (
        "Files and images entries do not pair up by exact file name: an entry without a file, "
        "a file without an entry, two files with the same name."
    )
    fix = "Give every file exactly one name and at least one entry with that file_name."


class UnreadableFile(InvalidInput):
    code = "unreadable_file"
    when = "A file cannot be decoded: empty, truncated, or not what its name says."
    fix = "Re-export the file; check the upload sends the file's bytes unchanged."


class InconsistentSeries(InvalidInput):
    code = "inconsistent_series"
    when = "The files of a series disagree: mixed orientations or sizes, missing slices."
    fix = "Send one complete series per request."


class UnsupportedImage(InvalidInput):
    """A readable file whose content the model cannot take (wrong channels, bit depth...)."""

    code = "unsupported_image"
    when = "The file is readable but the model cannot take it (channels, bit depth, dimensions)."
    fix = "Check the model's input in GET /models/{name}."


class VolumeRequired(InvalidInput):
    code = "volume_required"
    when = "A single 2D image (or RGB pixels) was sent to a volumetric model."
    fix = (
        "Send the series' slices, a multi-frame DICOM or a 3D NIfTI; GET /models/{name} gives "
        "the model's patch and spacing."
    )


class GeometryRequired(InvalidInput):
    code = "geometry_required"
    when = (
        "The model resamples to a voxel spacing and the images do not state theirs (PNG or "
        "JPEG slices, DICOM without Pixel Spacing)."
    )
    fix = "Send the series as DICOM or NIfTI, whose headers give the voxel spacing."


class DicomInputRequired(InvalidInput):
    code = "dicom_input_required"
    when = (
        "A DICOM result (output=seg, sr or dicom) was asked for images that are not DICOM, or "
        "for a multi-frame file without one images entry per frame."
    )
    fix = "Send the DICOM instances (one entry per frame), or ask for output=aicoco."


class NoSuitableSeries(InvalidInput):
    code = "no_suitable_series"
    when = (
        "None of the study's (or the upload's) series fits the model under the series rules: "
        "an image modality, not a localizer or secondary capture, one orientation, enough slices."
    )
    fix = "The message names each series and why it was passed over; name the series to use."


class CallbackNotAllowed(InvalidInput):
    code = "callback_not_allowed"
    when = (
        "A job's callback URL is not http(s) or names a host outside JOB_CALLBACK_HOSTS (empty "
        "by default: no callbacks). It is refused before anything is sent to it."
    )
    fix = "Give a callback on a host the operator listed in JOB_CALLBACK_HOSTS, or poll instead."


class WrongInputKind(InvalidInput):
    code = "wrong_input_kind"
    when = (
        "The request's kind does not fit the model: tables sent to an image model, images to "
        "a tabular one, a hybrid image without table_ids, or table_ids naming no table."
    )
    fix = "GET /models/{name} gives the model's task; send images, tables, or both as it takes."


class InvalidTable(InvalidInput):
    code = "invalid_table"
    when = (
        "A table cannot be read as CSV: no header, no data rows, a row with more or fewer "
        "cells than the header, text that is not UTF-8, a quote left open."
    )
    fix = "Re-export the table as UTF-8 CSV with one header line; details name the file and line."


class TableColumnMismatch(InvalidInput):
    code = "table_columns"
    when = (
        "A table's header lacks a column the model declares, has one it does not, or repeats one."
    )
    fix = "Send exactly the model's columns (GET /models/{name}), in any order."


class TableValueError(InvalidInput):
    code = "table_value"
    when = (
        "A cell is not of its column's declared type: text where a number is declared, an "
        "empty cell, NaN or infinity, a fraction in an integer column."
    )
    fix = "Fix the cell that details name (file, line, column), or impute missing values first."


class TableWindowMismatch(InvalidInput):
    code = "table_window"
    when = (
        "meta.window_size differs from the model's, or a table's rows are not a multiple of "
        "it (a window must be whole), or a hybrid image's table has another number of rows."
    )
    fix = "Send the model's window_size and whole windows of rows."


# 5xx
class InternalError(ApiError):
    status = 500
    code = "internal_error"
    when = "A bug in the gateway. The log line with the same request_id has the traceback."
    fix = "Report it with the request_id."


class InvalidModelOutput(ApiError):
    """The model answered, but not in the shape or range its configuration declares."""

    status = 500
    code = "invalid_model_output"
    when = "The model answered with tensors that do not match its configuration."
    fix = "Fix the model or its config.pbtxt parameters."


class InvalidModelConfig(ApiError):
    """The model's ``config.pbtxt`` parameters (``aicoco.*``) or tensors don't fit its pipeline.

    The deployment's mistake, not the client's, and retrying won't help: 500 with the model and
    the parameter named.
    """

    status = 500
    code = "invalid_model_config"
    when = "The model's config.pbtxt parameters (aicoco.*) or tensors do not fit its pipeline."
    fix = "Fix the model's config.pbtxt; the message names the model and the parameter."


class JobInterrupted(ApiError):
    status = 500
    code = "job_interrupted"
    when = (
        "A job's gateway stopped (a restart, a crash, a lost node) while it ran, twice: it was "
        "queued again once, then failed with this code rather than run a third time."
    )
    fix = "Submit it again; if it keeps failing, check the gateways' logs for what stopped them."


class ModelError(ApiError):
    status = 502
    code = "model_error"
    when = "Triton ran the model and the model failed."
    fix = "See the message (Triton's) and Triton's log."


class PacsError(ApiError):
    status = 502
    code = "pacs_error"
    when = "The DICOMweb server (DICOMWEB_URL) answered an error: refused credentials, a failure."
    fix = "See the message (the server's status and text); check the DICOMWEB_* settings."


class ServiceUnavailable(ApiError):
    """The 503s: each says, with ``Retry-After``, when trying again is worth it."""

    status = 503
    parent = True
    retry_after_s: ClassVar[int] = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ServerBusy(ServiceUnavailable):
    code = "server_busy"
    when = (
        "The gateway is saturated: MAX_UPLOADS bodies are being received, MAX_QUEUE requests "
        "already wait for an inference slot, this one waited QUEUE_TIMEOUT_S for one, or "
        "JOB_MAX_QUEUED jobs are already queued."
    )
    fix = "Retry after the Retry-After header's seconds, or add gateway replicas."


class TritonUnavailable(ServiceUnavailable):
    code = "triton_unavailable"
    retry_after_s = 5
    when = "Triton cannot be reached."
    fix = "Retry later; check Triton is running and TRITON_URL points at it."


class ModelNotReady(ServiceUnavailable):
    code = "model_not_ready"
    retry_after_s = 5
    when = "The model exists but is not loaded (loading, or failed to load)."
    fix = "Retry later; GET /models shows readiness and Triton's log the reason."


class PacsUnavailable(ServiceUnavailable):
    code = "pacs_unavailable"
    retry_after_s = 10
    when = "The DICOMweb server (DICOMWEB_URL) cannot be reached: refused, unknown host, reset."
    fix = "Retry later; check the PACS is up and DICOMWEB_URL points at its DICOMweb root."


class JobStoreUnavailable(ServiceUnavailable):
    code = "job_store_unavailable"
    retry_after_s = 5
    when = "The jobs' store (JOBS_DATABASE_URL, or the SQLite file under JOBS_DIR) cannot be used."
    fix = "Retry later; check the database is up and JOBS_DATABASE_URL points at it."


class TritonTimeout(ApiError):
    status = 504
    code = "triton_timeout"
    when = "Triton did not answer within TRITON_TIMEOUT_S."
    fix = "Retry with fewer images, or raise TRITON_TIMEOUT_S."


class PacsTimeout(ApiError):
    status = 504
    code = "pacs_timeout"
    when = "The DICOMweb server did not answer within DICOMWEB_TIMEOUT_S."
    fix = "Retry later, or raise DICOMWEB_TIMEOUT_S for large studies."
