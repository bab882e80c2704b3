"""Streaming ``multipart/form-data`` parsing with limits, into a per-request folder.

Why not Starlette's ``request.form()``: it spools every file to an anonymous temporary file of its
own, cannot bound the whole body or stop at the first file over ``MAX_FILES`` before reading the
rest, and decodes part headers as Latin-1 (mangling the UTF-8 file names browsers send). Here
python-multipart's push parser sees each network chunk once; limits are checked as bytes
arrive, so a request over a limit is refused without reading (or storing) the remainder.

Storage: each ``files`` part goes to a numbered file in the request's folder (``00001.dcm``). The
client's file name is kept exactly, as the AiCOCO ``file_name`` that pairs the file with its
``images`` entries, and is never used as a path. Only its extension is reused, when it is short
and alphanumeric, because some readers (nibabel) choose the format by extension. File names that
look like paths (``../x.dcm``, ``/etc/passwd``, ``a/b.png``, backslashes, control characters)
are refused with 422 ``invalid_input``: they cannot harm the disk, but such a name almost
always means the client sent something other than what its ``images`` entries describe.

Memory: part data is buffered up to :data:`FLUSH_BYTES` and then appended to its file on a
thread (``anyio.to_thread``, not the CPU pool, so an upload never queues behind a long decode).
Writing on a thread keeps a slow disk from stalling the event loop, and 1 MiB batches keep the
number of thread hops small. Non-file fields are JSON text kept in memory, bounded by
:data:`MAX_FIELD_BYTES` over all of them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio.to_thread
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import parse_options_header

from gateway.errors import (
    FileMismatch,
    InvalidInput,
    MalformedMultipart,
    MalformedRequest,
    PayloadTooLarge,
    TooManyFiles,
    UnsupportedMediaType,
)
from gateway.inference import Upload

FILES_FIELD = "files"
"""The field name of the image parts, repeated once per file (FLaVor's wire format)."""

FLUSH_BYTES = 1024 * 1024
"""Buffered upload bytes per request before they are written to disk."""

INLINE_WRITE_BYTES = 256 * 1024
"""A flush this small is written on the event loop: into the page cache it takes tens of
microseconds, less than the hand-off to a thread and back (about 0.1 ms of CPU here)."""

MAX_FIELD_BYTES = 32 * 1024 * 1024
"""All non-file fields together (``images``, ``meta``, ``data``...): generous for 4096 entries."""

MAX_FIELDS = 256
"""Non-file fields in one request."""

_SUFFIX = re.compile(r"(?:\.[A-Za-z0-9]{1,8}){1,2}$")
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass(frozen=True)
class FormLimits:
    max_request_bytes: int
    max_files: int
    max_field_bytes: int = MAX_FIELD_BYTES
    max_fields: int = MAX_FIELDS


@dataclass
class Form:
    """A parsed request: text fields by name and the uploads by exact file name."""

    fields: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)

    @property
    def upload_bytes(self) -> int:
        return sum(upload.size for upload in self.uploads.values())


@dataclass(eq=False)
class _Part:
    name: str
    file_name: str | None
    content_type: str | None
    path: Path | None
    """Where a file part is stored; ``None`` for a field, whose bytes stay in ``data``."""
    data: bytearray = field(default_factory=bytearray)
    size: int = 0


def check_content_type(content_type: str | None) -> bytes:
    """Return the multipart boundary, or raise the 415/400 that says what is wrong."""
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "no Content-Type"
        raise UnsupportedMediaType(
            f"the request body must be multipart/form-data (repeated 'files' parts and an "
            f"'images' field), got {shown}"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedMultipart("the multipart/form-data Content-Type has no boundary parameter")
    return boundary


def check_content_length(content_length: str | None, limit: int) -> None:
    """Refuse a body declared larger than the limit before reading any of it."""
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise MalformedRequest(f"Content-Length must be a number of bytes, got {content_length!r}")
    if int(content_length) > limit:
        raise PayloadTooLarge(
            f"the request body is {int(content_length)} bytes; this gateway accepts at most "
            f"{limit} (MAX_REQUEST_BYTES)",
            details={"limit": limit, "size": int(content_length)},
        )


async def parse_form(
    chunks: AsyncIterator[bytes],
    boundary: bytes,
    folder: Path,
    limits: FormLimits,
) -> Form:
    """Stream the body into ``folder``; the caller creates and always removes the folder."""
    parser = _FormParser(boundary, folder, limits)
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limits.max_request_bytes:
            raise PayloadTooLarge(
                f"the request body exceeds {limits.max_request_bytes} bytes (MAX_REQUEST_BYTES)",
                details={"limit": limits.max_request_bytes},
            )
        parser.feed(chunk)
        if parser.pending_bytes >= FLUSH_BYTES:
            await parser.flush()
    if not parser.ended:
        raise MalformedMultipart(
            "the multipart body ended before its closing boundary: the upload was cut short"
        )
    await parser.flush()
    return parser.form


class _FormParser:
    """python-multipart callbacks (synchronous) collecting parts; :meth:`flush` does the I/O."""

    def __init__(self, boundary: bytes, folder: Path, limits: FormLimits) -> None:
        self.form = Form()
        self.ended = False
        self.pending_bytes = 0
        self._folder = folder
        self._limits = limits
        self._files = 0
        self._field_bytes = 0
        self._part: _Part | None = None
        self._pending: list[_Part] = []
        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except FormParserError as exc:
            raise MalformedMultipart(f"unusable multipart boundary: {exc}") from None

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedMultipart(f"the multipart body is malformed: {exc}") from None

    async def flush(self) -> None:
        """Append the buffered bytes to their files (creating new files, even empty ones)."""
        writes: list[tuple[Path, bytearray]] = []
        for part in self._pending:
            assert part.path is not None
            writes.append((part.path, part.data))
            part.data = bytearray()
        small = self.pending_bytes <= INLINE_WRITE_BYTES
        self._pending = []
        self.pending_bytes = 0
        if small:
            _append_all(writes)
        elif writes:
            await anyio.to_thread.run_sync(_append_all, writes)

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = _decode_header(bytes(self._header_value)).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition")
        if disposition is None:
            raise MalformedMultipart("a multipart part has no Content-Disposition header")
        kind, params = _parse_disposition(disposition)
        name = params.get("name")
        if kind != "form-data" or not name:
            raise MalformedMultipart(
                f"a multipart part's Content-Disposition must be form-data with a name, "
                f"got {disposition!r}"
            )
        file_name = params.get("filename")
        content_type = self._headers.get("content-type")
        if name == FILES_FIELD:
            self._part = self._begin_file(file_name, content_type)
        else:
            self._part = self._begin_field(name, file_name, content_type)

    def _begin_file(self, file_name: str | None, content_type: str | None) -> _Part:
        self._files += 1
        if self._files > self._limits.max_files:
            raise TooManyFiles(
                f"more than {self._limits.max_files} files in one request (MAX_FILES); "
                f"send fewer files per request",
                details={"limit": self._limits.max_files},
            )
        if file_name is None:
            raise InvalidInput(
                f"'{FILES_FIELD}' part number {self._files} has no filename; every file part "
                f"needs one, it pairs the file with its images entries"
            )
        _check_file_name(file_name)
        if file_name in self.form.uploads:
            raise FileMismatch(
                f"two file parts are both named {file_name!r}; file names must be unique because "
                f"images entries refer to files by exact name",
                details={"file_name": file_name},
            )
        suffix = match.group(0) if (match := _SUFFIX.search(file_name)) else ""
        path = self._folder / f"{self._files:05d}{suffix.lower()}"
        self.form.uploads[file_name] = Upload(file_name, path, 0, content_type)
        part = _Part(FILES_FIELD, file_name, content_type, path)
        self._pending.append(part)
        return part

    def _begin_field(self, name: str, file_name: str | None, content_type: str | None) -> _Part:
        if name in self.form.fields:
            raise InvalidInput(
                f"the field {name!r} is sent twice; send each field once",
                details={"field": name},
            )
        if len(self.form.fields) >= self._limits.max_fields:
            raise PayloadTooLarge(
                f"more than {self._limits.max_fields} fields besides '{FILES_FIELD}'",
                details={"limit": self._limits.max_fields},
            )
        self.form.fields[name] = ""
        return _Part(name, file_name, content_type, None)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None, "python-multipart sends data only after a part's headers"
        size = end - start
        part.size += size
        part.data += data[start:end]
        if part.path is not None:
            self.pending_bytes += size
            if part not in self._pending:
                self._pending.append(part)
            return
        self._field_bytes += size
        if self._field_bytes > self._limits.max_field_bytes:
            raise PayloadTooLarge(
                f"the fields besides '{FILES_FIELD}' hold more than "
                f"{self._limits.max_field_bytes} bytes together",
                details={"limit": self._limits.max_field_bytes},
            )

    def _on_part_end(self) -> None:
        part = self._part
        assert part is not None, "python-multipart ends only a part it began"
        self._part = None
        if part.path is None:
            self.form.fields[part.name] = _field_text(part)
            return
        assert part.file_name is not None
        upload = self.form.uploads[part.file_name]
        self.form.uploads[part.file_name] = replace(upload, size=part.size)

    def _on_end(self) -> None:
        self.ended = True


def _append_all(writes: list[tuple[Path, bytearray]]) -> None:
    for path, data in writes:
        with path.open("ab") as file:
            file.write(data)


def _field_text(part: _Part) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"the field {part.name!r} is not UTF-8 text; fields hold JSON",
            details={"field": part.name},
        ) from None


def _decode_header(raw: bytes) -> str:
    """Browsers send UTF-8 file names raw in the header; old clients send Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parse_disposition(value: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if key.endswith("*"):
            # RFC 7578 forbids the RFC 5987 form (filename*=) in multipart/form-data.
            continue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        params[key] = raw
    return kind.strip().lower(), params


def _check_file_name(file_name: str) -> None:
    bad = (
        not file_name
        or file_name in {".", ".."}
        or "/" in file_name
        or "\\" in file_name
        or any(ord(char) < 32 or ord(char) == 127 for char in file_name)
    )
    if bad:
        raise InvalidInput(
            f"the file name {file_name!r} is not a plain file name: send the base name only "
            f"(no '/', '\\', control characters, '.' or '..'), the same in the images entries",
            details={"file_name": file_name},
        )
