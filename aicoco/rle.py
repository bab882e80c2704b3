"""COCO-style run-length encoding: the lossless form of a segmentation (``iscrowd: 1``).

Encoding, exactly as COCO's uncompressed RLE: the slice's pixels are read in column-major order
(top to bottom down column 0, then column 1, ...); ``counts`` alternates run lengths of
background and foreground, starting with background (a leading 0 when the first pixel is
foreground); the runs cover every pixel, so they sum to height * width (no trailing empty run).
``size`` is ``[height, width]``. ``pycocotools.mask.frPyObjects(rle, height, width)`` reads it.
Polygons cannot describe holes; this can describe any mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from aicoco.errors import AiCOCOFormatError
from aicoco.models import AiRLE, CheckedRLE

_RLE = TypeAdapter(CheckedRLE)


def encode(mask: NDArray[Any]) -> AiRLE:
    """The RLE of a 2D mask (any nonzero pixel is foreground)."""
    if mask.ndim != 2:
        raise AiCOCOFormatError(f"expected a 2D (height, width) mask, got shape {mask.shape}")
    height, width = mask.shape
    positions = np.flatnonzero(mask.T)
    return AiRLE(size=[height, width], counts=counts(positions, height * width))


def counts(positions: NDArray[np.integer], total: int) -> list[int]:
    """Run lengths of a slice from its foreground pixels' sorted column-major positions.

    This is what lets the segmentation strategy encode an object from its bounding box alone,
    without ever building the full-size slice.
    """
    if positions.size == 0:
        return [total] if total else []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    run_starts = positions[np.append(0, breaks)]
    run_ends = positions[np.append(breaks - 1, positions.size - 1)] + 1
    result = np.empty(2 * len(run_starts), dtype=np.int64)
    result[0::2] = run_starts - np.append(0, run_ends[:-1])
    result[1::2] = run_ends - run_starts
    runs: list[int] = result.tolist()
    tail = total - int(run_ends[-1])
    if tail:
        runs.append(tail)
    return runs


def decode(rle: AiRLE | Mapping[str, Any]) -> NDArray[np.bool_]:
    """The (height, width) boolean mask of an RLE; refuses counts that do not cover the slice."""
    try:
        checked = _RLE.validate_python(rle)
    except ValidationError as exc:
        raise AiCOCOFormatError(
            f"expected an RLE {{'size': [height, width], 'counts': [...]}}: {exc}"
        ) from exc
    height, width = checked.size
    values = np.arange(len(checked.counts)) % 2 == 1
    flat = np.repeat(values, checked.counts)
    return flat.reshape(width, height).T.copy()
