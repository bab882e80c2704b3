"""What a file is, from its content: clients' extensions are often wrong or missing.

A PNG named ``scan.dcm`` reads as a PNG and a DICOM named ``IM0001`` as DICOM. The one place a
name matters is a DICOM dataset written without the 128-byte preamble and ``DICM`` prefix (old
ACR-NEMA style files): nothing in its first bytes identifies it, so it is tried as DICOM only when
its name ends in ``.dcm`` or ``.dicom``, and accepted only if pydicom finds image rows, columns
and pixel data in it. Everything else is 415 ``unsupported_file_type``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from pathlib import Path

import pydicom

from gateway.errors import UnreadableFile, UnsupportedFileType
from gateway.request import Upload

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_MAGICS = (b"n+1\x00",)
_NIFTI1_PAIR_MAGIC = b"ni1\x00"
_NIFTI2_MAGIC = b"n+2\x00\r\n\x1a\n"
_NIFTI2_PAIR_MAGIC = b"ni2\x00\r\n\x1a\n"
_HEAD_BYTES = 1024
_RAW_DICOM_SUFFIXES = (".dcm", ".dicom")


class FileKind(enum.Enum):
    DICOM = "DICOM"
    PNG = "PNG"
    JPEG = "JPEG"
    NIFTI = "NIfTI"

    @property
    def family(self) -> str:
        """Kinds that may be stacked together: PNG and JPEG are both 8/16-bit pictures."""
        return "PNG/JPEG" if self in (FileKind.PNG, FileKind.JPEG) else self.value


def detect(upload: Upload) -> FileKind:
    """The kind of ``upload`` by its content; 415 if it is none we read (an empty file was
    refused earlier, by :func:`~gateway.readers.matching.check_uploads`)."""
    with upload.path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    if head[128:132] == b"DICM":
        return FileKind.DICOM
    if head.startswith(_PNG_MAGIC):
        return FileKind.PNG
    if head.startswith(_JPEG_MAGIC):
        return FileKind.JPEG
    if head.startswith(_GZIP_MAGIC):
        head = _gunzip_head(upload)
    if nifti_version(upload.file_name, head) is not None:
        return FileKind.NIFTI
    if upload.file_name.lower().endswith(_RAW_DICOM_SUFFIXES) and _is_raw_dicom(upload.path):
        return FileKind.DICOM
    raise UnsupportedFileType(
        f"'{upload.file_name}' is not a file type this gateway reads (DICOM, NIfTI-1/2 .nii or "
        f".nii.gz, PNG, JPEG); its first bytes are {head[:8]!r}",
        details={"file_name": upload.file_name},
    )


def nifti_version(file_name: str, header: bytes) -> int | None:
    """1 or 2 for a single-file NIfTI header, None for anything else.

    The header is little- or big-endian; ``sizeof_hdr`` (348 or 540) tells which. A header of a
    ``.hdr``/``.img`` pair is refused by name: the image half cannot travel in the same file.
    """
    if len(header) < 348:
        return None
    for order in "<>":
        (size,) = struct.unpack(f"{order}i", header[:4])
        if size == 348 and header[344:348] in _NIFTI1_MAGICS:
            return 1
        if size == 540 and header[4:12] == _NIFTI2_MAGIC:
            return 2
        if (size == 348 and header[344:348] == _NIFTI1_PAIR_MAGIC) or (
            size == 540 and header[4:12] == _NIFTI2_PAIR_MAGIC
        ):
            raise UnsupportedFileType(
                f"'{file_name}' is the header of a NIfTI .hdr/.img pair; send the volume as one "
                ".nii or .nii.gz file",
                details={"file_name": file_name},
            )
    return None


def _gunzip_head(upload: Upload) -> bytes:
    """The first bytes of a gzip file's content, enough for a NIfTI-2 header."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    head = b""
    with upload.path.open("rb") as f:
        while len(head) < _HEAD_BYTES and (chunk := f.read(64 * 1024)):
            try:
                head += inflater.decompress(chunk, _HEAD_BYTES - len(head))
            except zlib.error as exc:
                raise UnreadableFile(
                    f"'{upload.file_name}' is a corrupt gzip stream: {exc}",
                    details={"file_name": upload.file_name},
                ) from exc
    return head


def _is_raw_dicom(path: Path) -> bool:
    """Whether a file without the ``DICM`` prefix parses as a DICOM image dataset."""
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=1024)
    except Exception:  # whatever the parser raises on these bytes: not a raw DICOM dataset
        return False
    return "Rows" in ds and "Columns" in ds and "PixelData" in ds
