"""PNG and JPEG through Pillow, restricted to those two decoders.

The gateway's ``MAX_PIXELS_PER_IMAGE`` replaces Pillow's decompression-bomb guard for these
reads, checked from the parsed header before a pixel is decoded: one configurable bound, one
error (413 ``image_too_large``). The file is opened through the PNG or JPEG plugin's class,
chosen by signature, which parses the header exactly as ``Image.open`` does but without its
guard. Pillow's ``Image.MAX_IMAGE_PIXELS`` is left as it is: it is process-wide, and switching it
off would switch it off for every custom pipeline in the process too.

Values by mode:

- 8-bit grayscale ``(H, W)`` uint8; bilevel becomes 0/255; 16-bit grayscale PNG ``(H, W)`` uint16.
- RGB ``(H, W, 3)`` uint8 (CMYK and YCbCr JPEGs are converted to RGB).
- Palette images are expanded: to grayscale when every palette entry is gray, else to RGB.
- Alpha is composited onto black, the background of a reading-room viewer: a fully transparent
  pixel is black whatever colour it stores.
- EXIF orientation is not applied: pixel coordinates in the response refer to the stored pixels.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from gateway.errors import InconsistentSeries, UnsupportedImage
from gateway.inference import Upload
from gateway.readers.base import ImageSet, unreadable
from gateway.readers.limits import VoxelBudget
from gateway.readers.matching import FileEntries
from gateway.readers.stack import StackBuilder, one_file_set, same_size

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_PILLOW_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
)


def _open(path: Path) -> ImageFile.ImageFile:
    """The file through its plugin's class: ``Image.open`` restricted to PNG and JPEG, minus
    the process-wide bomb guard that the caller replaces with its own bound."""
    with path.open("rb") as file:
        signature = file.read(len(_PNG_SIGNATURE))
    if signature.startswith(_PNG_SIGNATURE):
        return PngImagePlugin.PngImageFile(path)
    if signature.startswith(_JPEG_SIGNATURE):
        return JpegImagePlugin.JpegImageFile(path)
    raise UnidentifiedImageError(f"{path.name} is neither a PNG nor a JPEG file")


@dataclass(frozen=True)
class RasterHeader:
    upload: Upload
    size: tuple[int, int]
    """(rows, columns)."""
    mode: str


def read_header(upload: Upload, budget: VoxelBudget) -> RasterHeader:
    """Size and mode from the header alone, checked against ``budget``."""
    name = upload.file_name
    try:
        with _open(upload.path) as image:
            columns, rows = image.size
            mode = image.mode
    except _PILLOW_ERRORS as exc:
        raise unreadable(name, "image", "its header cannot be parsed", exc) from exc
    budget.claim(name, rows, columns)
    return RasterHeader(upload=upload, size=(rows, columns), mode=mode)


def read(upload: Upload, budget: VoxelBudget) -> npt.NDArray[Any]:
    """:func:`read_header` then :func:`read_pixels` on one open file: the header is parsed once
    and checked against ``budget`` before a pixel is decoded."""
    name = upload.file_name
    try:
        with _open(upload.path) as image:
            columns, rows = image.size
            budget.claim(name, rows, columns)
            return _decode(name, image)
    except _PILLOW_ERRORS as exc:
        raise unreadable(name, "image", "its header cannot be parsed", exc) from exc


def read_pixels(header: RasterHeader) -> npt.NDArray[Any]:
    """The image as ``(H, W)`` grayscale or ``(H, W, 3)`` uint8 RGB (see the module's docstring)."""
    name = header.upload.file_name
    try:
        with _open(header.upload.path) as image:
            return _decode(name, image)
    except _PILLOW_ERRORS as exc:
        raise unreadable(name, "image", "its pixels cannot be decoded", exc) from exc


def _decode(name: str, image: Image.Image) -> npt.NDArray[Any]:
    try:
        image.load()
        return _to_array(name, image)
    except _PILLOW_ERRORS as exc:
        raise unreadable(name, "image", "its pixels cannot be decoded", exc) from exc


def _to_array(name: str, image: Image.Image) -> npt.NDArray[Any]:
    mode = image.mode
    if mode == "P" or mode == "PA":
        transparent = mode == "PA" or "transparency" in image.info
        if transparent:
            image, mode = image.convert("RGBA"), "RGBA"
        elif _gray_palette(image):
            image, mode = image.convert("L"), "L"
        else:
            image, mode = image.convert("RGB"), "RGB"
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnsupportedImage(
                f"'{name}' holds 32-bit integer pixels outside 0..65535",
                details={"file_name": name},
            )
        return values.astype(np.uint16)
    if mode == "LA":
        return _composite(np.asarray(image.convert("LA")))
    if mode == "RGBA":
        return _composite(np.asarray(image.convert("RGBA")))
    if mode in ("RGB", "CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise UnsupportedImage(
        f"'{name}' has the {image.format} mode '{mode}', which this gateway does not read",
        details={"file_name": name},
    )


def _gray_palette(image: Image.Image) -> bool:
    palette = image.getpalette()
    if not palette:
        return True
    entries = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return bool((entries == entries[:, :1]).all())


def _composite(values: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Colour (last channel alpha) over black, rounded: ``color * alpha / 255``."""
    color = values[..., :-1].astype(np.uint16)
    alpha = values[..., -1:].astype(np.uint16)
    out = (color * alpha + 127) // 255
    result = out.astype(np.uint8)
    return result[..., 0] if result.shape[-1] == 1 else result


def sniff_png(head: bytes, upload: Upload) -> bool:
    return head.startswith(_PNG_SIGNATURE)


def sniff_jpeg(head: bytes, upload: Upload) -> bool:
    return head.startswith(_JPEG_SIGNATURE)


def read_file(pair: FileEntries, budget: VoxelBudget) -> ImageSet:
    """One picture, one slice."""
    return one_file_set(pair, read(pair.upload, budget)[None], False, None, None)


def read_stack(pairs: Sequence[FileEntries], budget: VoxelBudget) -> ImageSet:
    """Several PNG or JPEG pictures of one size and bit depth, in ``index`` order."""
    headers = [read_header(pair.upload, budget) for pair in pairs]
    same_size([(h.upload.file_name, h.size) for h in headers])
    builder = StackBuilder(len(headers))
    first_dtype: np.dtype | None = None
    for z, header in enumerate(headers):
        picture = read_pixels(header)
        first_dtype = first_dtype or picture.dtype
        if picture.dtype != first_dtype:
            raise InconsistentSeries(
                f"'{header.upload.file_name}' has {picture.dtype.itemsize * 8}-bit pixels but "
                f"'{headers[0].upload.file_name}' has {first_dtype.itemsize * 8}-bit: the images "
                "of one request must share one bit depth",
                details={"file_names": [headers[0].upload.file_name, header.upload.file_name]},
            )
        builder.put(z, picture, header.upload.file_name)
    return ImageSet(
        pixels=builder.result(),
        hounsfield=False,
        spacing=None,
        slice_images=[pair.entries[0] for pair in pairs],
    )
