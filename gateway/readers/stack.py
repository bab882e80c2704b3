"""Slices into one ``(Z, H, W[, 3])`` array, allocated once.

Slices are written straight into the final array as they are decoded, so a 300-file CT series
never exists twice in memory (a list of slices plus ``np.stack`` would double the peak).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import InconsistentSeries, InvalidInput
from gateway.readers.base import ImageSet, Pixels
from gateway.readers.matching import FileEntries


class StackBuilder:
    """Fills ``depth`` slices in any order; the first slice fixes the shape and dtype.

    A later slice with a wider dtype (an int16 CT series whose last slice's rescale overflows
    int16) widens the whole stack once instead of losing values.
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._array: Pixels | None = None
        self._first_name = ""

    def put(self, z: int, frame: npt.NDArray[Any], file_name: str) -> None:
        if self._array is None:
            self._array = np.empty((self.depth, *frame.shape), dtype=frame.dtype)
            self._first_name = file_name
        elif frame.shape != self._array.shape[1:]:
            raise InconsistentSeries(
                f"'{file_name}' holds {_describe(frame.shape)} pixels but "
                f"'{self._first_name}' holds {_describe(self._array.shape[1:])}: the images of "
                "one request must share one size",
                details={"file_names": [self._first_name, file_name]},
            )
        elif not np.can_cast(frame.dtype, self._array.dtype, "safe"):
            self._array = self._array.astype(promote(self._array.dtype, frame.dtype))
        self._array[z] = frame

    def result(self) -> Pixels:
        if self._array is None:
            raise RuntimeError("no slice was put into the stack")
        return self._array


def promote(a: np.dtype[Any], b: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype that holds both; float32 once either is a float (not numpy's float64)."""
    if np.issubdtype(a, np.floating) or np.issubdtype(b, np.floating):
        return np.dtype(np.float32)
    return np.promote_types(a, b)


def _describe(shape: tuple[int, ...]) -> str:
    size = f"{shape[0]} x {shape[1]}"
    return f"{size} RGB" if len(shape) == 3 else f"{size} grayscale"


def one_file_set(
    pair: FileEntries,
    pixels: np.ndarray,
    hounsfield: bool,
    spacing: tuple[float, float, float] | None,
    modality: str | None,
) -> ImageSet:
    """The one file's stack with its entries: one per slice, or one for the whole stack."""
    depth, entries = pixels.shape[0], pair.entries
    if len(entries) not in (1, depth):
        raise InvalidInput(
            f"'{pair.upload.file_name}' holds {depth} slice(s) but {len(entries)} images entries "
            f"name it: send one entry per slice ({depth}) or one entry for the whole volume",
            details={
                "file_name": pair.upload.file_name,
                "slices": depth,
                "entries": len(entries),
            },
        )
    return ImageSet(pixels, hounsfield, spacing, list(entries), modality)


def require_one_slice(file_name: str, slices: int, files: int) -> None:
    if slices != 1:
        raise InvalidInput(
            f"'{file_name}' holds {slices} slices, but the request has {files} files: a request "
            "sends either one file (of any number of slices) or several single-slice files",
            details={"file_name": file_name, "slices": slices},
        )


def same_size(sizes: Sequence[tuple[str, tuple[int, ...]]]) -> None:
    first_name, first_size = sizes[0]
    for name, size in sizes[1:]:
        if size != first_size:
            raise InconsistentSeries(
                f"'{name}' is {size[0]} x {size[1]} pixels but '{first_name}' is "
                f"{first_size[0]} x {first_size[1]}: the images of one request must share one size",
                details={"file_names": [first_name, name]},
            )


def spacing(
    pixel_spacing: tuple[float, float] | None, slice_spacing: float | None, depth: int
) -> tuple[float, float, float] | None:
    """(z, row, col) mm; a single slice's unknown thickness is 1.0, a stack's is unknown."""
    if pixel_spacing is None:
        return None
    if slice_spacing is None:
        if depth > 1:
            return None
        slice_spacing = 1.0
    return float(slice_spacing), float(pixel_spacing[0]), float(pixel_spacing[1])
