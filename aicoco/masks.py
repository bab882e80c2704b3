"""The polygon codec of a single slice: mask -> polygons and back.

``mask_to_polygons`` writes the conventions of :mod:`aicoco.contours` (8-connected regions,
vertices on boundary pixel centres, x = column, y = row, corners only, one vertex for a lone
pixel, two for a straight one-pixel-thick run). ``polygons_to_mask`` is its inverse: it fills
each polygon including its edges (a pixel whose centre is inside or on the polygon is set), so
that decoding an encoded mask gives back every component exactly, holes filled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aicoco.contours import outer_contours
from aicoco.errors import AiCOCOFormatError

_EPS = 1e-9


def mask_to_polygons(mask: NDArray[Any]) -> list[list[int]]:
    """Outer boundaries of the 8-connected components of a 2D mask (nonzero = foreground).

    One polygon per component, ordered by their top-left pixel (row first). Holes are not
    described (their pixels come back filled); use :func:`aicoco.rle.encode` when they matter.
    """
    if mask.ndim != 2:
        raise AiCOCOFormatError(f"expected a 2D (height, width) mask, got shape {mask.shape}")
    found = outer_contours((mask != 0)[np.newaxis])
    # One label only: the label sort kept the slice's top-left order.
    return [found.flat(i) for i in range(len(found))]


def polygons_to_mask(
    polygons: Sequence[Sequence[float]], shape: tuple[int, int]
) -> NDArray[np.bool_]:
    """Fill polygons ``[x1, y1, x2, y2, ...]`` into a (height, width) mask, edges included.

    Pixel (row, col) is set when its centre (x = col, y = row) lies inside a polygon (even-odd
    rule) or on one of its edges; polygons are unioned. One- and two-vertex polygons are a point
    and a segment. Parts outside the mask are clipped.
    """
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    edges = _edges(polygons)
    if edges.size == 0:
        return mask
    _fill_interiors(mask, edges)
    _draw_edges(mask, edges)
    return mask


def _edges(polygons: Sequence[Sequence[float]]) -> NDArray[np.float64]:
    """Rows ``(polygon, x0, y0, x1, y1)``, every polygon closed."""
    rows = []
    for number, polygon in enumerate(polygons):
        points = np.asarray(polygon, dtype=np.float64)
        if points.ndim != 1 or points.size < 2 or points.size % 2:
            raise AiCOCOFormatError(
                f"expected polygon {number} as a flat [x1, y1, x2, y2, ...] list with an even, "
                f"nonzero number of values, got {points.size} values"
            )
        start = points.reshape(-1, 2)
        end = np.roll(start, -1, axis=0)
        rows.append(np.column_stack([np.full(len(start), number), start, end]))
    return np.concatenate(rows) if rows else np.zeros((0, 5))


def _spread(first: NDArray[np.int64], count: NDArray[np.int64]) -> tuple[NDArray[np.int64], ...]:
    """For items with integer ranges ``first .. first + count - 1``: (item, value) per value."""
    count = np.maximum(count, 0)
    item = np.repeat(np.arange(len(first)), count)
    offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return item, first[item] + offsets


def _fill_interiors(mask: NDArray[np.bool_], edges: NDArray[np.float64]) -> None:
    """Even-odd scanlines on the pixel-centre rows; each edge covers rows in [ymin, ymax)."""
    height, width = mask.shape
    polygon, x0, y0, x1, y1 = edges.T
    sloped = y0 != y1
    polygon, x0, y0, x1, y1 = polygon[sloped], x0[sloped], y0[sloped], x1[sloped], y1[sloped]
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.ceil(low).astype(np.int64)
    edge, row = _spread(first, np.ceil(high).astype(np.int64) - first)
    x = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    # Each polygon crosses each row an even number of times: pair the crossings in x order.
    order = np.lexsort((x, row, polygon[edge]))
    x, row = x[order].reshape(-1, 2), row[order][0::2]
    left = np.clip(np.ceil(x[:, 0] - _EPS), 0, width).astype(np.int64)
    right = np.clip(np.floor(x[:, 1] + _EPS) + 1, 0, width).astype(np.int64)
    inside = (row >= 0) & (row < height) & (left < right)
    row, left, right = row[inside], left[inside], right[inside]
    # Union of spans through a running count of span starts minus span ends.
    depth = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(depth, (row, left), 1)
    np.add.at(depth, (row, right), -1)
    mask |= np.cumsum(depth, axis=1)[:, :width] > 0


def _draw_edges(mask: NDArray[np.bool_], edges: NDArray[np.float64]) -> None:
    """Set the pixels whose centres lie exactly on an edge (points and segments included)."""
    _, x0, y0, x1, y1 = edges.T
    level = y0 == y1
    # Horizontal edges (and points) on a pixel-centre row: every centre between the ends.
    on_row = level & (np.abs(y0 - np.round(y0)) < _EPS)
    start = np.ceil(np.minimum(x0, x1)[on_row] - _EPS).astype(np.int64)
    stop = np.floor(np.maximum(x0, x1)[on_row] + _EPS).astype(np.int64)
    edge, col = _spread(start, stop - start + 1)
    _set(mask, np.round(y0[on_row]).astype(np.int64)[edge], col)
    # Other edges: one candidate per pixel-centre row, kept where x is a centre too.
    x0, y0, x1, y1 = x0[~level], y0[~level], x1[~level], y1[~level]
    first = np.ceil(np.minimum(y0, y1) - _EPS).astype(np.int64)
    last = np.floor(np.maximum(y0, y1) + _EPS).astype(np.int64)
    edge, row = _spread(first, last - first + 1)
    x = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    centred = np.abs(x - np.round(x)) < _EPS
    _set(mask, row[centred], np.round(x[centred]).astype(np.int64))


def _set(mask: NDArray[np.bool_], rows: NDArray[np.int64], cols: NDArray[np.int64]) -> None:
    height, width = mask.shape
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    mask[rows[inside], cols[inside]] = True
