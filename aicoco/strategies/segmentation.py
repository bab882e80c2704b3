"""Segmentation, 2D (C, H, W) and 3D (C, Z, H, W): label maps to objects and annotations.

Per class channel, 0 is background and every distinct nonzero value is one object (a 0/1 mask
is one object per class; an instance map 1..N is N objects). Each object gets one annotation
per slice it appears on, on that slice's image. The cost is a constant number of array passes
over each channel's nonzero bounding box, processed in blocks of slices so that memory stays
bounded whatever the volume, plus a walk along the boundaries; FLaVor instead rescans
every slice once per label.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aicoco.contours import outer_contours
from aicoco.errors import AiCOCOFormatError
from aicoco.models import AiAnnotation, AiCOCOOutput, AiObject, AiRLE
from aicoco.rle import counts
from aicoco.strategies.base import OutputStrategy, Skeleton, as_array

Segmentation = list[list[int | float]] | AiRLE

_BLOCK_VOXELS = 1 << 21
"""Voxels of a channel's bounding box handled at once (temporaries are a few times this)."""


class SegmentationStrategy(OutputStrategy):
    """``model_out``: integer labels (bool, unsigned or signed ints >= 0), one channel per
    declared category, (C, H, W) for one image or (C, Z, H, W) for Z images (slice z is the
    z-th image in numeric ``index`` order).

    Default: each annotation's ``segmentation`` holds the outer polygons of the object's pieces
    on that slice (``iscrowd: 0``); holes come back filled. ``lossless=True``: a COCO RLE of the
    object's exact pixels on that slice instead (``iscrowd: 1``), see :mod:`aicoco.rle`.
    Categories with ``display: false`` are listed but get no objects nor annotations.
    """

    def __init__(self, lossless: bool = False) -> None:
        self.lossless = lossless

    def format(self, model_out: Any, skeleton: Skeleton) -> AiCOCOOutput:
        labels = _labels(model_out, len(skeleton.category_specs), len(skeleton.images))
        document = skeleton.output()
        for channel, (spec, category) in enumerate(
            zip(skeleton.category_specs, skeleton.categories, strict=False)
        ):
            if not spec.display:
                continue
            per_label = self._channel(labels[channel])
            for label in sorted(per_label):
                slices = per_label[label]
                object_id, *annotation_ids = skeleton.ids.take(1 + len(slices))
                document.objects.append(
                    AiObject(id=object_id, category_ids=[category.id], regressions=None)
                )
                # Unvalidated: validation would copy every polygon list, a second copy of the
                # document's bulk, to re-check ints that come straight from numpy.
                document.annotations.extend(
                    AiAnnotation.model_construct(
                        id=annotation_id,
                        image_id=skeleton.images[z].id,
                        object_id=object_id,
                        iscrowd=1 if self.lossless else 0,
                        bbox=None,
                        segmentation=segmentation,
                    )
                    for annotation_id, (z, segmentation) in zip(annotation_ids, slices, strict=True)
                )
        return document

    def _channel(self, channel: NDArray[Any]) -> dict[int, list[tuple[int, Segmentation]]]:
        """Per label, ``(slice, segmentation)`` in slice order."""
        found: dict[int, list[tuple[int, Segmentation]]] = defaultdict(list)
        box = _bounding_box(channel)
        if box is None:
            return found
        (z0, z1), (r0, r1), (c0, c1) = box
        height, width = channel.shape[1:]
        step = max(1, _BLOCK_VOXELS // ((r1 - r0) * (c1 - c0)))
        for start in range(z0, z1, step):
            block = channel[start : min(start + step, z1), r0:r1, c0:c1]
            if self.lossless:
                _add_rles(found, block, (start, r0, c0), (height, width))
            else:
                _add_polygons(found, block, (start, r0, c0))
        return found


def _labels(model_out: Any, n_classes: int, n_images: int) -> NDArray[Any]:
    """``model_out`` as a (C, Z, H, W) view, after checking shape and values."""
    array = as_array(model_out, "model_out")
    if array.ndim == 3:
        if n_images != 1:
            raise AiCOCOFormatError(
                f"expected a (C, Z, H, W) output with Z = {n_images}, one slice per image "
                f"entry, got a 2D output of shape {array.shape}"
            )
        array = array[:, np.newaxis]
    elif array.ndim != 4:
        raise AiCOCOFormatError(
            f"expected `model_out` of shape (C, H, W) or (C, Z, H, W), got shape {array.shape}"
        )
    if array.shape[0] != n_classes:
        raise AiCOCOFormatError(
            f"expected {n_classes} channels in `model_out` (one per declared category), "
            f"got {array.shape[0]} (shape {array.shape})"
        )
    if array.shape[1] != n_images:
        raise AiCOCOFormatError(
            f"expected {n_images} slices in `model_out` (one per image entry), "
            f"got shape {array.shape}"
        )
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise AiCOCOFormatError(
            f"expected integer labels (bool, uint or int; threshold probabilities first), "
            f"got dtype {array.dtype}"
        )
    if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() < 0:
        raise AiCOCOFormatError(
            f"expected labels >= 0 (0 = background), got {array.min()} in `model_out`"
        )
    return array


def _bounding_box(channel: NDArray[Any]) -> tuple[tuple[int, int], ...] | None:
    """Half-open (z, row, col) ranges holding every nonzero voxel, from two reductions."""
    planes = np.flatnonzero(np.any(channel, axis=(1, 2)))
    if planes.size == 0:
        return None
    z0, z1 = int(planes[0]), int(planes[-1]) + 1
    footprint = np.any(channel[z0:z1], axis=0)
    rows = np.flatnonzero(np.any(footprint, axis=1))
    cols = np.flatnonzero(np.any(footprint, axis=0))
    return (z0, z1), (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


def _add_polygons(
    found: dict[int, list[tuple[int, Segmentation]]],
    block: NDArray[Any],
    origin: tuple[int, int, int],
) -> None:
    contours = outer_contours(block)
    if len(contours) == 0:
        return
    z0, r0, c0 = origin
    flat = (contours.xy + np.array([c0, r0])).ravel().tolist()
    polygons = [flat[2 * a : 2 * b] for a, b in pairwise(contours.bounds.tolist())]
    for first, end in _runs(contours.label, contours.z):
        found[int(contours.label[first])].append((int(contours.z[first]) + z0, polygons[first:end]))


def _add_rles(
    found: dict[int, list[tuple[int, Segmentation]]],
    block: NDArray[Any],
    origin: tuple[int, int, int],
    image: tuple[int, int],
) -> None:
    """RLEs straight from the block: the full-size slices are never built."""
    z0, r0, c0 = origin
    height, width = image
    rows, cols = block.shape[1:]
    # Column-major within each slice: (z, col, row) order, then grouped by label (stable).
    columns = np.ascontiguousarray(block.transpose(0, 2, 1)).reshape(-1)
    position = np.flatnonzero(columns)
    if position.size == 0:
        return
    label = columns[position]
    by_label = np.argsort(label, kind="stable")
    position, label = position[by_label], label[by_label]
    z, rest = np.divmod(position, cols * rows)
    c, r = np.divmod(rest, rows)
    pixel = (c + c0) * height + (r + r0)
    for first, end in _runs(label, z):
        rle = AiRLE.model_construct(
            size=[height, width], counts=counts(pixel[first:end], height * width)
        )
        found[int(label[first])].append((int(z[first]) + z0, rle))


def _runs(label: NDArray[Any], z: NDArray[np.int64]) -> list[tuple[int, int]]:
    """``[first, end)`` of each run of equal (label, slice) in arrays sorted by both; none for
    empty arrays (a block of slices inside the bounding box may hold no foreground)."""
    if len(z) == 0:
        return []
    change = np.flatnonzero((np.diff(label) != 0) | (np.diff(z) != 0)) + 1
    bounds = np.concatenate([[0], change, [len(z)]]).tolist()
    return list(pairwise(bounds))
