"""What a file is, from its content: clients' extensions are often wrong or missing.

A PNG named ``scan.dcm`` reads as a PNG and a DICOM named ``IM0001`` as DICOM. Each registered
format (:mod:`gateway.readers.formats`) looks at the file's first bytes, in turn; only then are
the costlier fallbacks tried (a DICOM dataset written without the 128-byte preamble and ``DICM``
prefix, which only its name ends in ``.dcm`` or ``.dicom`` hints at). Everything else is 415
``unsupported_file_type``.
"""

from __future__ import annotations

from gateway.errors import UnsupportedFileType
from gateway.inference import Upload
from gateway.readers.formats import FileKind, Format

__all__ = ["FileKind", "Format", "detect"]

_HEAD_BYTES = 1024


def detect(upload: Upload) -> FileKind:
    """The format of ``upload`` by its content; 415 if it is none we read (an empty file was
    refused earlier, by :func:`~gateway.readers.matching.check_uploads`)."""
    with upload.path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    for kind in FileKind:
        if kind.format.sniff(head, upload):
            return kind
    for kind in FileKind:
        fallback = kind.format.fallback
        if fallback is not None and fallback(upload):
            return kind
    names = ", ".join(kind.format.described for kind in FileKind)
    raise UnsupportedFileType(
        f"'{upload.file_name}' is not a file type this gateway reads ({names}); its first "
        f"bytes are {head[:8]!r}",
        details={"file_name": upload.file_name},
    )
