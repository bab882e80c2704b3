"""``multipart/related`` (RFC 2387) as DICOMweb carries instances (PS3.18 8.6.1.2).

A retrieved series streams straight into the request's folder, one file per part, under the
same byte and file limits as an upload; nothing holds a whole study in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO

from gateway.errors import PacsError, PayloadTooLarge, TooManyFiles

DICOM_PART = "application/dicom"
_MAX_HEADER_BYTES = 16 * 1024


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a ``multipart/related`` Content-Type."""
    media, *params = (part.strip() for part in content_type.split(";"))
    if media.lower() != "multipart/related":
        raise PacsError(
            f"the PACS answered {media or 'no content type'} where multipart/related was "
            "expected: is DICOMWEB_URL the DICOMweb root?"
        )
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    raise PacsError("the PACS answered multipart/related without a boundary")


async def save_parts(
    chunks: AsyncIterator[bytes],
    boundary: bytes,
    folder: Path,
    *,
    max_bytes: int,
    max_parts: int,
) -> list[Path]:
    """Each part's body into its own file of ``folder``, in order (headers are not kept)."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) - 1
    # A leading CRLF lets the first boundary line match the same delimiter as the others.
    buffer = bytearray(b"\r\n")
    state = "preamble"
    paths: list[Path] = []
    out: BinaryIO | None = None
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge(
                    f"the series is larger than MAX_REQUEST_BYTES ({max_bytes} bytes)",
                    details={"limit": max_bytes},
                )
            buffer += chunk
            while state != "done":
                if state in ("preamble", "body"):
                    at = buffer.find(delimiter)
                    if at < 0:
                        if len(buffer) > keep:
                            if out is not None:
                                out.write(buffer[:-keep])
                            del buffer[:-keep]
                        break
                    if out is not None:
                        out.write(buffer[:at])
                        out.close()
                        out = None
                    del buffer[: at + len(delimiter)]
                    state = "delimited"
                elif state == "delimited":
                    if len(buffer) < 2:
                        break
                    if buffer.startswith(b"--"):
                        state = "done"
                        break
                    eol = buffer.find(b"\r\n")
                    if eol < 0:
                        _bounded(buffer)
                        break
                    del buffer[: eol + 2]
                    state = "headers"
                else:  # headers: lines up to an empty one, or none at all
                    if buffer.startswith(b"\r\n"):
                        consumed = 2
                    else:
                        found = buffer.find(b"\r\n\r\n")
                        if found < 0:
                            _bounded(buffer)
                            break
                        consumed = found + 4
                    del buffer[:consumed]
                    if len(paths) >= max_parts:
                        raise TooManyFiles(
                            f"the series has more than MAX_FILES ({max_parts}) instances",
                            details={"limit": max_parts},
                        )
                    path = folder / f"instance-{len(paths):05d}"
                    paths.append(path)
                    out = path.open("wb")
                    state = "body"
    finally:
        if out is not None:
            out.close()
    if state != "done":
        raise PacsError("the PACS's answer was cut short before its closing boundary")
    return paths


def _bounded(buffer: bytearray) -> None:
    if len(buffer) > _MAX_HEADER_BYTES:
        raise PacsError("the PACS's answer has a part header longer than 16 KiB")


def related_body(parts: Sequence[bytes]) -> tuple[bytes, str]:
    """A ``multipart/related; type="application/dicom"`` body of DICOM files (for STOW-RS)."""
    boundary = uuid.uuid4().hex
    chunks = []
    for part in parts:
        chunks += [f"--{boundary}\r\nContent-Type: {DICOM_PART}\r\n\r\n".encode(), part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="{DICOM_PART}"; boundary={boundary}'
    return b"".join(chunks), content_type
