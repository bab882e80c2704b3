"""What every route that takes files does before inference: headers, body, folder, entries.

The wire format is FLaVor's, so its clients work unchanged: repeated ``files`` parts, an
``images`` field holding the JSON list of AiCOCO image entries (or ``tables`` for tabular
models), and every other top-level key of the AiCOCO input document as its own JSON field
(``meta``; unknown keys reach the pipeline as ``fields``). A single-part variant is accepted
too: a ``data`` part (text or a JSON file) holding ``{"images": [...], ...}``, with an optional
``metadata`` part.

Order of checks: cheap header checks (:func:`check_headers`), then the body under an upload
slot and the pace of :mod:`gateway.upload_pace` (:func:`receive_form`), into a folder that is
removed whatever happens (:func:`upload_folder`), then the fields and the pairing of files with
entries (:func:`build_request`, :func:`parse_entries`). Only then does a request wait for an
inference slot (:mod:`gateway.runner`): a slow upload never holds a slot that a ready request
could use.
Routes take this module's functions; no route imports another.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from aicoco import AiImage, IdGenerator
from aicoco.tables import AiTable
from gateway.errors import (
    ApiError,
    FileMismatch,
    InvalidAiCOCO,
    InvalidInput,
    InvalidJSONText,
    JSONNumberTooLarge,
    JSONTooDeep,
    MalformedJSON,
    MalformedMultipart,
    MalformedRequest,
    PayloadTooLarge,
    ServerBusy,
    TableTooLarge,
    TooManyFiles,
    UnreadableFile,
    UnsupportedMediaType,
    UnsupportedTableFormat,
    UploadTimeout,
)
from gateway.inference import InferenceRequest, StageObserver
from gateway.json_fields import parse_field
from gateway.readers.matching import check_uploads
from gateway.readers.tables import TableLimits, check_table_size, table_format
from gateway.service import service_of
from gateway.upload_pace import receive_body
from gateway.uploads import (
    Form,
    FormLimits,
    check_content_length,
    check_content_type,
    parse_form,
)

RAISES: tuple[type[ApiError], ...] = (
    # The headers and the body.
    UnsupportedMediaType,
    MalformedRequest,
    MalformedMultipart,
    PayloadTooLarge,
    TooManyFiles,
    UploadTimeout,
    ServerBusy,
    # The JSON fields.
    MalformedJSON,
    JSONTooDeep,
    JSONNumberTooLarge,
    InvalidJSONText,
    # The entries, and their pairing with the files.
    InvalidInput,
    InvalidAiCOCO,
    FileMismatch,
    UnreadableFile,
)
"""What taking a request's files can raise, for the routes that take them to declare."""
TABLE_RAISES: tuple[type[ApiError], ...] = (UnsupportedTableFormat, TableTooLarge)
"""What taking tables adds (:func:`build_request`): a file that is no CSV or TSV, one too large."""

IMAGES_FIELD = "images"
TABLES_FIELD = "tables"
DATA_FIELD = "data"
MAX_REPORTED_ERRORS = 20


def check_headers(request: Request) -> bytes:
    """The multipart boundary, after the checks that cost nothing: content type and length."""
    boundary = check_content_type(request.headers.get("content-type"))
    check_content_length(
        request.headers.get("content-length"), service_of(request).settings.max_request_bytes
    )
    return boundary


async def receive_form(request: Request, boundary: bytes, folder: Path) -> Form:
    """The body, into ``folder``, under an upload slot and the pace of :mod:`gateway.upload_pace`.

    Every route that takes files reads them through here, so none bypasses the upload limits.
    """
    service = service_of(request)
    limits = FormLimits(service.settings.max_request_bytes, service.settings.max_files)
    with service.uploads.slot():
        chunks = receive_body(request.receive, service.pace)
        try:
            form = await parse_form(chunks, boundary, folder, limits)
        except UploadTimeout:
            service.metrics.upload_timeouts.inc()
            raise
        finally:
            await chunks.aclose()
    service.metrics.upload_bytes.inc(form.upload_bytes)
    return form


@contextlib.contextmanager
def upload_folder(upload_dir: Path) -> Iterator[Path]:
    """A fresh folder for one request's files, removed on success, error and cancellation.

    Removal is synchronous on purpose: it must also run while the task is being cancelled (a
    client that hung up), where awaiting a thread is not possible. It only unlinks files.
    """
    folder = Path(tempfile.mkdtemp(prefix="gateway-upload-", dir=upload_dir))
    try:
        yield folder
    finally:
        _remove_folder(folder)


def _remove_folder(folder: Path) -> None:
    """The folder holds only the uploads, side by side: unlink them and remove it, a few
    system calls, where ``shutil.rmtree``'s symlink-safe walk costs several times more per 2D
    request. Anything unexpected in it falls back to ``rmtree``."""
    try:
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def build_request(
    form: Form,
    *,
    request_id: str,
    model_name: str,
    observe: StageObserver | None,
    table_limits: TableLimits | None = None,
) -> InferenceRequest:
    """Validate the fields against the AiCOCO format and pair the files with the entries."""
    images, tables, fields = parse_all_entries(form, table_limits)
    return InferenceRequest(
        request_id=request_id,
        model_name=model_name,
        images=images,
        uploads=form.uploads,
        fields=fields,
        tables=tables,
        ids=IdGenerator(),
        observe=observe,
    )


def parse_entries(form: Form) -> tuple[list[AiImage], dict[str, Any]]:
    """The validated ``images`` entries, paired with the uploads, and the other fields, for
    the routes that take images only."""
    fields = _fields(form)
    images = _validate_images(_take_images(fields))
    check_uploads((image.file_name for image in images), form.uploads)
    return images, fields


def parse_all_entries(
    form: Form, table_limits: TableLimits | None = None
) -> tuple[list[AiImage], list[AiTable], dict[str, Any]]:
    """The ``images`` and ``tables`` entries (one of them at least), paired with the uploads by
    the same exact-name rule, and the other fields.

    The cheap checks of the tables run here, before the request waits for a slot: the format
    (415 for a spreadsheet) and, given ``table_limits``, the byte bound (413).
    """
    fields = _fields(form)
    raw_tables = fields.pop(TABLES_FIELD, None)
    tables = _validate_tables(raw_tables) if raw_tables is not None else []
    images: list[AiImage] = []
    if IMAGES_FIELD in fields or not tables:
        images = _validate_images(_take_images(fields))
    both = sorted({i.file_name for i in images} & {t.file_name for t in tables})
    if both:
        raise InvalidAiCOCO(
            f"{both[0]!r} is named by an images entry and a tables entry; a file is one or the "
            "other",
            details={"file_name": both[0]},
        )
    named = [image.file_name for image in images] + [table.file_name for table in tables]
    check_uploads(named, form.uploads)
    for table in tables:
        upload = form.uploads[table.file_name]
        table_format(upload)
        if table_limits is not None:
            check_table_size(upload, table_limits)
    return images, tables, fields


def _fields(form: Form) -> dict[str, Any]:
    """Every field, parsed; the single-part ``data`` variant's keys become fields when the
    entries are not fields themselves."""
    fields = {name: parse_field(name, text) for name, text in form.fields.items()}
    if DATA_FIELD not in fields or IMAGES_FIELD in fields or TABLES_FIELD in fields:
        return fields  # with the entries as fields, 'data' is one more field
    data = fields.pop(DATA_FIELD)
    if not isinstance(data, dict):
        raise InvalidAiCOCO(
            f"the '{DATA_FIELD}' part must be a JSON object like {{\"images\": [...]}}, "
            f"got {_json_type(data)}"
        )
    if IMAGES_FIELD not in data and TABLES_FIELD not in data:
        raise InvalidAiCOCO(
            f"the '{DATA_FIELD}' object has no '{IMAGES_FIELD}' (or '{TABLES_FIELD}') list"
        )
    for key, value in data.items():
        if key in fields:
            raise InvalidInput(
                f"{key!r} is sent both as a field and inside '{DATA_FIELD}'; send it once",
                details={"field": key},
            )
        fields[key] = value
    return fields


def _take_images(fields: dict[str, Any]) -> Any:
    if IMAGES_FIELD not in fields:
        raise InvalidAiCOCO(
            f"no images entries: send an '{IMAGES_FIELD}' field holding the JSON list of AiCOCO "
            f"image entries (or a '{DATA_FIELD}' part holding {{\"images\": [...]}}); a tabular "
            f"model takes a '{TABLES_FIELD}' field instead"
        )
    return fields.pop(IMAGES_FIELD)


def _validate_tables(raw: Any) -> list[AiTable]:
    if not isinstance(raw, list):
        raise InvalidAiCOCO(
            f"'{TABLES_FIELD}' must be a JSON list of table entries, got {_json_type(raw)}"
        )
    if not raw:
        raise InvalidAiCOCO(f"'{TABLES_FIELD}' is empty: send one entry per table file")
    tables: list[AiTable] = []
    for position, entry in enumerate(raw):
        try:
            tables.append(AiTable.model_validate(entry))
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            where = f"{TABLES_FIELD}[{position}]{_location(error['loc'])}"
            raise InvalidAiCOCO(
                f"invalid AiCOCO table entry: {where}: {error['msg']}",
                details={"location": where},
            ) from None
    for key in ("id", "file_name"):
        values = [getattr(table, key) for table in tables]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise InvalidAiCOCO(
                f"two tables entries have the {key} {repeated[0]!r}; each table is one file "
                "with its own id",
                details={key: repeated[0]},
            )
    return tables


def _validate_images(raw: Any) -> list[AiImage]:
    if not isinstance(raw, list):
        raise InvalidAiCOCO(
            f"'{IMAGES_FIELD}' must be a JSON list of image entries, got {_json_type(raw)}"
        )
    if not raw:
        raise InvalidAiCOCO(f"'{IMAGES_FIELD}' is empty: send one entry per image")
    images: list[AiImage] = []
    problems: list[dict[str, str]] = []
    for position, entry in enumerate(raw):
        try:
            images.append(AiImage.model_validate(entry))
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=False):
                where = _location(error["loc"])
                problems.append(
                    {"location": f"{IMAGES_FIELD}[{position}]{where}", "message": error["msg"]}
                )
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidAiCOCO(
            f"invalid AiCOCO image entry: {first['location']}: {first['message']}{more}",
            details={"errors": problems[:MAX_REPORTED_ERRORS], "count": len(problems)},
        )
    seen: set[str] = set()
    for image in images:
        if image.id in seen:
            raise InvalidAiCOCO(
                f"two images entries have the id {image.id!r}; ids must be unique",
                details={"id": image.id},
            )
        seen.add(image.id)
    return images


def _location(loc: tuple[int | str, ...]) -> str:
    """A validation error's place inside one entry: ``.index``, ``.regressions[0].value``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
