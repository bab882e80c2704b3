"""Outer boundaries of labelled regions, slice by slice, traced on pixel cracks.

Why cracks: a crack is one side of a pixel whose neighbour across that side has another label.
Which cracks exist, which crack follows which, and which cycles are outer boundaries are all
array operations over the whole stack of slices at once (a handful of passes over the voxels,
whatever the number of labels); only the walk along each cycle, to put its cracks in order, is
a Python loop, over boundary cracks rather than voxels.

Conventions, shared by every polygon this library writes:

- Cracks run with their region on the right (clockwise on screen, y pointing down).
- Regions are 8-connected: where two pixels of one label touch only at a corner, the boundary
  passes from one to the other, so they are one component with one outer boundary. (Background
  is then 4-connected: a background pixel whose four neighbours belong to the region is a hole.)
- A boundary's polygon visits the centres of the region's pixels along it in order (the
  "owners" of its cracks), keeping only the corners: where the step to the next pixel changes
  direction. Consecutive vertices are therefore 8-neighbours joined by horizontal, vertical or
  45-degree runs of boundary pixels, and filling the polygon including its edges gives back the
  component with its holes filled.
- A one-pixel component is a single vertex; a straight run of pixels (one pixel thick) is its two
  end vertices. Thin parts are walked out and back, so a vertex can repeat.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

# Directions of cracks, clockwise: east, south, west, north.
_EAST, _SOUTH, _WEST, _NORTH = 0, 1, 2, 3
# A crack starts at a pixel corner (vertex (r, c) is the top-left corner of pixel (r, c)).
# Its end vertex, relative to its start:
_STEP_R = np.array([0, 1, 0, -1], dtype=np.int64)
_STEP_C = np.array([1, 0, -1, 0], dtype=np.int64)
# The pixel whose side it is (the region on its right), relative to its start vertex:
_OWNER_R = np.array([0, 0, -1, -1], dtype=np.int64)
_OWNER_C = np.array([0, -1, -1, 0], dtype=np.int64)

# The four pixels around a vertex, as bits of a code: 1 = north-west, 2 = north-east,
# 4 = south-west, 8 = south-east; a bit is set when that pixel has the crack's label.
_NW, _NE, _SW, _SE = 1, 2, 4, 8


def _next_direction_table() -> NDArray[np.int8]:
    """Direction of the crack that continues a boundary, by incoming direction and code.

    Cracks leaving a vertex: east along the top of SE (when NE is not in the region), south
    along the right of SW (SE not in), west along the bottom of NW (SW not in), north along the
    left of NE (NW not in). Only at a saddle (NW and SE in, or NE and SW in) do two leave; trying
    a left turn first joins the diagonal pixels, which is what makes regions 8-connected.
    """
    table = np.full((4, 16), -1, dtype=np.int8)
    for code in range(16):
        leaving = {
            _EAST: bool(code & _SE) and not code & _NE,
            _SOUTH: bool(code & _SW) and not code & _SE,
            _WEST: bool(code & _NW) and not code & _SW,
            _NORTH: bool(code & _NE) and not code & _NW,
        }
        for incoming in range(4):
            for turn in (3, 0, 1):  # left, straight, right
                candidate = (incoming + turn) % 4
                if leaving[candidate]:
                    table[incoming, code] = candidate
                    break
    return table


_NEXT = _next_direction_table()


@dataclass(frozen=True)
class Contours:
    """The outer boundaries found in a stack, ordered by (label, slice, top-left start).

    Boundary ``i`` lies on slice ``z[i]``, belongs to label ``label[i]`` and has the vertices
    ``xy[bounds[i]:bounds[i + 1]]``, one ``(x, y)`` = (column, row) pair per row.
    """

    z: IntArray
    label: NDArray[np.integer] | NDArray[np.bool_]
    """In the input's dtype: a uint64 label stays itself."""
    bounds: IntArray
    xy: IntArray

    def __len__(self) -> int:
        return len(self.z)

    def flat(self, i: int) -> list[int]:
        """Boundary ``i`` as AiCOCO writes polygons: ``[x1, y1, x2, y2, ...]``."""
        result: list[int] = self.xy[self.bounds[i] : self.bounds[i + 1]].ravel().tolist()
        return result


def outer_contours(labels: NDArray[np.integer] | NDArray[np.bool_]) -> Contours:
    """Outer boundaries of every 8-connected component of every nonzero label, per slice.

    ``labels`` is (Z, H, W); 0 is background, every other value a region of its own (a label
    split in pieces on a slice gives one boundary per piece). Coordinates are the array's.
    """
    depth, height, width = labels.shape
    padded = np.zeros((depth, height + 2, width + 2), dtype=labels.dtype)
    padded[:, 1:-1, 1:-1] = labels
    crack_ids = _crack_ids(padded)
    if crack_ids.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Contours(empty, empty, np.zeros(1, dtype=np.int64), np.zeros((0, 2), np.int64))
    successor, owner_label = _successors(padded, crack_ids)
    del padded
    order, starts = _cycles(successor)
    del successor
    crack_ids, owner_label = crack_ids[order], owner_label[order]
    del order
    lengths = np.diff(np.append(starts, len(crack_ids)))

    z, r, c, direction = _unpack(crack_ids, height, width)
    # Twice the signed area of each cycle (shoelace over its crack vertices): positive for a
    # clockwise, outer boundary, negative for the boundary of a hole.
    cross = c * (r + _STEP_R[direction]) - (c + _STEP_C[direction]) * r
    outer = np.flatnonzero(np.add.reduceat(cross, starts) > 0)
    # Cycles come in order of their smallest crack, i.e. by slice then top-left start; a stable
    # sort by label keeps that order within a label.
    outer = outer[np.argsort(owner_label[starts[outer]], kind="stable")]
    kept = _segments(starts[outer], lengths[outer])
    starts = np.append(0, np.cumsum(lengths[outer]))[:-1]
    z, r, c, direction = (a[kept] for a in (z, r, c, direction))
    owner_label = owner_label[kept]
    rows, cols, bounds = _corners(r + _OWNER_R[direction], c + _OWNER_C[direction], starts)
    return Contours(
        z=z[starts],
        label=owner_label[starts],
        bounds=bounds,
        xy=np.stack([cols, rows], axis=1),
    )


def _unpack(crack_ids: IntArray, height: int, width: int) -> tuple[IntArray, ...]:
    """(slice, row, column) of each crack's start vertex, and its direction."""
    vertex, direction = crack_ids >> 2, crack_ids & 3
    z, rest = np.divmod(vertex, (height + 1) * (width + 1))
    r, c = np.divmod(rest, width + 1)
    return z, r, c, direction


def _successors(
    padded: NDArray[np.integer] | NDArray[np.bool_], crack_ids: IntArray
) -> tuple[IntArray, NDArray[np.integer] | NDArray[np.bool_]]:
    """For each crack, the index of the crack after it on its boundary, and its label."""
    padded_height, padded_width = padded.shape[1:]
    height, width = padded_height - 2, padded_width - 2
    z, r, c, direction = _unpack(crack_ids, height, width)
    flat = padded.reshape(-1)
    slice_start = z * (padded_height * padded_width)
    owner = slice_start + (r + _OWNER_R[direction] + 1) * padded_width
    owner_label = flat[owner + c + _OWNER_C[direction] + 1]
    del owner
    r += _STEP_R[direction]
    c += _STEP_C[direction]
    # The pixel north-west of the end vertex, then its three neighbours in the 2 x 2 block.
    corner = slice_start + r * padded_width + c
    code = (flat[corner] == owner_label) * _NW
    code += (flat[corner + 1] == owner_label) * _NE
    code += (flat[corner + padded_width] == owner_label) * _SW
    code += (flat[corner + padded_width + 1] == owner_label) * _SE
    del corner
    following = (z * (height + 1) + r) * (width + 1) + c
    following *= 4
    following += _NEXT[direction, code]
    return np.searchsorted(crack_ids, following), owner_label


def _segments(starts: IntArray, lengths: IntArray) -> IntArray:
    """Indices of the segments ``[start, start + length)`` one after the other."""
    total = int(lengths.sum())
    offsets = np.append(0, np.cumsum(lengths))[:-1]
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def _cycles(successor: IntArray) -> tuple[IntArray, IntArray]:
    """Split a permutation into its cycles: (elements cycle by cycle, start of each cycle).

    Each cycle starts at its smallest element and cycles come in order of it. This walk is the
    one Python loop per boundary crack; ``array`` keeps it at 8 bytes per crack, and is faster
    than a list here (its ints are made on access, not chased through memory).
    """
    following = array("q", successor.astype(np.int64).tobytes())
    seen = bytearray(len(following))
    order = array("q")
    starts = array("q")
    append = order.append
    start = seen.find(0)
    while start != -1:
        starts.append(len(order))
        i = start
        while not seen[i]:
            seen[i] = 1
            append(i)
            i = following[i]
        start = seen.find(0, start + 1)
    return np.frombuffer(order, dtype=np.int64), np.frombuffer(starts, dtype=np.int64)


def _corners(
    rows: IntArray, cols: IntArray, starts: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Polygon vertices from the owner pixels of each cycle's cracks, in cycle order.

    First consecutive repeats go, keeping the last of each run (a pixel owns up to four cracks
    in a row): the run that wraps around ends at the cycle's first crack, so polygons start at
    their top-left pixel. A cycle whose cracks all belong to one pixel keeps that pixel. Then
    only the pixels where the step to the next one differs from the step from the previous one
    stay: the corners. Returns the kept rows, columns and the bounds of each cycle among them.
    """
    following = _following(starts, len(rows))
    distinct = (rows != rows[following]) | (cols != cols[following])
    alone = np.add.reduceat(distinct, starts) == 0
    distinct[starts[alone]] = True
    rows, cols, starts = _filter(rows, cols, starts, distinct)
    previous = _previous(starts, len(rows))
    following = _following(starts, len(rows))
    turn = (rows - rows[previous] != rows[following] - rows) | (
        cols - cols[previous] != cols[following] - cols
    )
    turn |= previous == following  # one or two pixels: every vertex stays
    rows, cols, starts = _filter(rows, cols, starts, turn)
    return rows, cols, np.append(starts, len(rows))


def _filter(
    rows: IntArray, cols: IntArray, starts: IntArray, keep: NDArray[np.bool_]
) -> tuple[IntArray, IntArray, IntArray]:
    kept = np.add.reduceat(keep.astype(np.int64), starts)
    return rows[keep], cols[keep], np.append(0, np.cumsum(kept))[:-1]


def _cycle_of(starts: IntArray, size: int) -> IntArray:
    lengths = np.diff(np.append(starts, size))
    return np.repeat(np.arange(len(starts), dtype=np.int64), lengths)


def _previous(starts: IntArray, size: int) -> IntArray:
    """Index of each element's predecessor within its cycle (the last for the first)."""
    cycle = _cycle_of(starts, size)
    ends = np.append(starts[1:], size) - 1
    index = np.arange(size, dtype=np.int64)
    return np.where(index == starts[cycle], ends[cycle], index - 1)


def _following(starts: IntArray, size: int) -> IntArray:
    """Index of each element's successor within its cycle (the first for the last)."""
    cycle = _cycle_of(starts, size)
    ends = np.append(starts[1:], size) - 1
    index = np.arange(size, dtype=np.int64)
    return np.where(index == ends[cycle], starts[cycle], index + 1)


def _crack_ids(padded: NDArray[np.integer] | NDArray[np.bool_]) -> IntArray:
    """Sorted ids ``vertex * 4 + direction`` of every crack, vertices in (z, row, col) order."""
    north_west = padded[:, :-1, :-1]
    north_east = padded[:, :-1, 1:]
    south_west = padded[:, 1:, :-1]
    south_east = padded[:, 1:, 1:]
    leaving = (
        (south_east, north_east),  # east: top of SE
        (south_west, south_east),  # south: right of SW
        (north_west, south_west),  # west: bottom of NW
        (north_east, north_west),  # north: left of NE
    )
    parts = []
    for direction, (owner, across) in enumerate(leaving):
        present = owner != across
        present &= owner != 0
        parts.append(np.flatnonzero(present) * 4 + direction)
    ids = np.concatenate(parts)
    ids.sort()
    return ids
