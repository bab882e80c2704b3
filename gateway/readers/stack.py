"""Slices into one ``(Z, H, W[, 3])`` array, allocated once.

Slices are written straight into the final array as they are decoded, so a 300-file CT series
never exists twice in memory (a list of slices plus ``np.stack`` would double the peak).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import InconsistentSeries
from gateway.readers.base import Pixels


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
