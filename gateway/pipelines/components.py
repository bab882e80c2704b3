"""Connected components of a long volume, slab by slab, in bounded memory.

Why not one ``scipy.ndimage.label`` call over the volume: whatever the output dtype asked for,
scipy labels into an int32 (or int64) copy whenever its provisional labels outgrow that dtype,
then compares the two: for a 300 x 512 x 512 lung mask with 10 components that was 393 MB of
temporaries, 2.5 times the CT's own pixel bytes, on top of the result.

How instead, for masks produced slab by slab (a few slices at a time) by a callable:

1. Label each slab on its own (int32, slab-sized) and number its components after those of the
   previous slabs. Components touching across a slab boundary (26-connectivity between the last
   slice of one slab and the first of the next) are recorded as pairs.
2. The pairs join provisional labels into final components (``scipy.sparse.csgraph``), numbered
   1..K in order of first appearance in raster order, as a whole-volume ``label`` numbers them.
3. Label each slab again and write ``table[provisional]`` into the result, in the result's dtype
   (uint8 when K allows), each slice into its slot.

Between the passes the masks are kept bit-packed (an eighth of a byte per voxel): relabelling
is cheaper than making them again, and holding them unpacked would cost as much as the labels.

A volumetric slab is labelled by ``cc3d`` (connected-components-3d), 26-connected: six times
faster than ``scipy.ndimage.label`` on a 16 x 512 x 512 lung slab here (7 ms against 43), and
numbering in the same raster order, so the result is the same array (a test compares the two).
Within-slice labelling (8-connected, slices apart) stays with scipy, whose 3D scan numbers the
slices in order; per-slice ``cc3d`` numbers differently and was only 1.6 times faster. So do
slabs one voxel thin in some axis (a last slab of one slice): cc3d 4.1 underestimates the labels
of such line-like arrays and raises ("cannot be mapped to union-find array").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cc3d
import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

MaskSource = Callable[[int, int], npt.NDArray[np.bool_]]
"""``(start, stop)`` -> the masks of stack slices ``start:stop``, shape ``(stop - start, H, W)``."""

Table = npt.NDArray[np.int64]
"""Provisional label (slab by slab, in order) -> final label; entry 0 is the background."""

Labels = npt.NDArray[np.int32]


def label_dtype(count: int) -> type[np.unsignedinteger]:
    """The smallest unsigned dtype for labels 0..count."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if count <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


@dataclass(frozen=True)
class Components:
    """What pass 1 found: the provisional -> final table, the count, the slabs' masks."""

    table: Table
    count: int
    packed: list[npt.NDArray[np.uint8]]
    """Each slab's masks, bit-packed along rows: an eighth of their size, for pass 2."""
    width: int
    volumetric: bool


def find_components(masks: MaskSource, slices: int, *, volumetric: bool, slab: int) -> Components:
    """Pass 1: label slab by slab, join across slab boundaries, number the components."""
    offset = 0
    previous: Labels | None = None
    pairs: list[Table] = []
    packed: list[npt.NDArray[np.uint8]] = []
    width = 0
    for start in range(0, slices, slab):
        mask = masks(start, min(start + slab, slices))
        width = mask.shape[-1]
        packed.append(np.packbits(mask, axis=-1))
        labels = _slab_labels(mask, volumetric, offset)
        offset = max(offset, int(labels.max(initial=0)))
        if volumetric and previous is not None:
            pairs.append(_touching(previous, labels[0]))
        previous = labels[-1]
    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
        shape=(offset + 1, offset + 1),
    )
    count, table = connected_components(graph, directed=False)
    # The background (node 0, never joined) is component 0; the others are numbered by their
    # smallest provisional label, i.e. in order of first appearance.
    return Components(table.astype(np.int64), int(count) - 1, packed, width, volumetric)


def write_components(components: Components, out: np.ndarray, slot: npt.NDArray[np.intp]) -> None:
    """Pass 2: the final labels of stack slice z into ``out[slot[z]]``."""
    final = components.table.astype(out.dtype)
    offset = 0
    start = 0
    for packed in components.packed:
        mask = np.unpackbits(packed, axis=-1, count=components.width).view(bool)
        labels = _slab_labels(mask, components.volumetric, offset)
        offset = max(offset, int(labels.max(initial=0)))
        out[slot[start : start + len(mask)]] = np.take(final, labels)
        start += len(mask)


def _slab_labels(mask: npt.NDArray[np.bool_], volumetric: bool, offset: int) -> Labels:
    """Components of one slab (8-connected in a slice; 26 across slices if volumetric),
    numbered from ``offset + 1``."""
    if volumetric and min(mask.shape) >= 2:
        found = cc3d.connected_components(
            np.ascontiguousarray(mask), connectivity=26, out_dtype=np.uint32, binary_image=True
        )
        labels: Labels = found.view(np.int32)
    else:
        structure = np.ones((3, 3, 3), dtype=bool)
        if not volumetric:
            structure[0] = structure[2] = False
        labels = np.empty(mask.shape, dtype=np.int32)
        ndimage.label(mask, structure=structure, output=labels)
    np.add(labels, np.int32(offset), out=labels, where=labels > 0)
    return labels


def _touching(below: Labels, above: Labels) -> Table:
    """Label pairs ``(a, b)`` with a pixel of ``a`` in ``below`` among the 8 neighbours (or the
    same position) of a pixel of ``b`` in the next slice ``above``."""
    height, width = below.shape
    keys = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            a = below[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)]
            b = above[max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)]
            both = (a > 0) & (b > 0)
            if both.any():
                # One int64 per pair: a 1-D unique is far faster than unique(axis=0).
                keys.append((a[both].astype(np.int64) << 32) | b[both].astype(np.int64))
    if not keys:
        return np.zeros((0, 2), dtype=np.int64)
    unique = np.unique(np.concatenate(keys))
    pairs: Table = np.stack([unique >> 32, unique & 0xFFFFFFFF], axis=1)
    return pairs
