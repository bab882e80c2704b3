"""The image size a compressed frame's own header declares, read before the frame is decoded.

A DICOM file's Rows and Columns are checked against the limits, but an encapsulated frame is a
JPEG, JPEG-LS or JPEG 2000 codestream with a size of its own, and that is what the decoder
allocates for: a few altered bytes in a JPEG 2000 SIZ marker made openjpeg allocate 24 GiB for
a file whose header said 1024 x 1024. PS3.5 A.4 requires the codestream to describe the image
the Image Pixel module describes, so a frame whose declared size differs from Rows x Columns is
refused before decoding.

Markers read (only the few bytes needed):

- JPEG (ISO 10918-1 B.2.2) and JPEG-LS (ISO 14495-1 C.2.2): the first SOF marker, ``FFCn`` or
  ``FFF7``: length, precision, then the number of lines and of samples per line.
- JPEG 2000 (ISO 15444-1 A.5.1): the SIZ marker ``FF51`` right after SOC ``FF4F``: Xsiz, Ysiz
  and the image offsets XOsiz, YOsiz; the size is ``(Ysiz - YOsiz, Xsiz - XOsiz)``. A JP2 file
  is searched for its ``jp2c`` box first.
"""

from __future__ import annotations

import struct

_SOC = b"\xff\x4f"
_SIZ = b"\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "
_JPEG_SOI = b"\xff\xd8"
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0), 0xF7}) - {0xC4, 0xC8, 0xCC}
"""SOF0-15 less DHT, JPG and DAC; plus JPEG-LS's SOF55."""
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
"""Markers without a length field: TEM and RST0-7."""


def declared_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) as the codestream's header declares them; None when the frame is not a
    codestream this module knows, or its header is cut short (the decoder then reports it)."""
    try:
        if frame.startswith(_JP2_SIGNATURE):
            frame = _jp2_codestream(frame)
        if frame.startswith(_SOC + _SIZ):
            return _siz(frame)
        if frame.startswith(_JPEG_SOI):
            return _sof(frame)
    except (struct.error, IndexError):
        return None
    return None


def _siz(codestream: bytes) -> tuple[int, int]:
    # SOC, SIZ marker, Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz (32 bits each).
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", codestream, 8)
    return ysiz - yosiz, xsiz - xosiz


def _sof(jpeg: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(jpeg):
        if jpeg[at] != 0xFF:
            return None
        marker = jpeg[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in _SOF_MARKERS:
            lines, samples = struct.unpack_from(">HH", jpeg, at + 5)
            return int(lines), int(samples)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", jpeg, at + 2)
        at += 2 + length
    return None


def _jp2_codestream(jp2: bytes) -> bytes:
    """The contents of the contiguous codestream box of a JP2 file (ISO 15444-1 I.5.4)."""
    at = 0
    while at + 8 <= len(jp2):
        length, kind = struct.unpack_from(">I4s", jp2, at)
        header = 8
        if length == 1:
            (length,) = struct.unpack_from(">Q", jp2, at + 8)
            header = 16
        if kind == b"jp2c":
            return jp2[at + header :]
        if length < header:
            return b""
        at += length
    return b""
