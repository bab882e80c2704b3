"""Raw model outputs to what the ``aicoco`` strategies take. Pure numpy/scipy, vectorised.

Semantics (also in the README's "Built-in pipelines"):

- Series aggregation. A 2D classifier or regressor applied to a series of N slices answers N
  times; the series gets one answer. Classification combines probabilities with ``max`` by
  default (a finding on any slice is a finding in the series), then thresholds (``>=``).
  Regression combines values with ``mean`` by default (``median``, ``max``, ``min`` on request),
  then applies ``value * scale + offset``.
- Detection: a box keeps the classes whose score reaches ``score_threshold``; non-maximum
  suppression runs per class (IoU above ``iou_threshold`` with a higher-scoring box of the same
  class removes that class from the box); boxes left without a class are dropped; the rest,
  best first, up to ``max_detections``. Boxes are scaled from model-input pixels back to the
  image's, clipped to it (boxes left empty are dropped before anything else) and rounded to 0.01
  pixel.
- Segmentation: probabilities are resized back to the image bilinearly (the preprocessing's
  alignment) and compared with ``threshold`` (``>=``); a ``mask`` output's nonzero values are
  resized by nearest neighbour. The result is in the strategy's layout ``(C, Z, H, W)``, slices
  in the entries' ``index`` order. With ``instances`` each class's connected components (full
  connectivity: 8 within a slice; 26 across slices for ``dims: 3``, none across slices for
  ``dims: 2``) become separate objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from aicoco import AiImage
from gateway.pipelines.components import (
    MaskSource,
    find_components,
    label_dtype,
    write_components,
)

Aggregate = Literal["max", "mean", "median", "min"]


def aggregate(values: np.ndarray, how: Aggregate) -> npt.NDArray[np.float64]:
    """``(Z, K)`` per-slice values -> ``(K,)``, combining slices."""
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"expected (slices, values), got {values.shape}")
    data = values.astype(np.float64, copy=False)
    result: npt.NDArray[np.float64]
    if how == "max":
        result = np.max(data, axis=0)
    elif how == "min":
        result = np.min(data, axis=0)
    elif how == "median":
        result = np.median(data, axis=0)
    else:
        result = np.mean(data, axis=0)
    return result


def positive(probabilities: np.ndarray, threshold: float) -> npt.NDArray[np.bool_]:
    """The decision of every classifier here: a category is found at ``threshold`` or above."""
    return np.asarray(probabilities >= threshold)


def reported(values: np.ndarray, scale: float, offset: float) -> npt.NDArray[np.float64]:
    """The value every regressor here reports: the model's, times ``scale``, plus ``offset``."""
    return np.asarray(values, dtype=np.float64) * scale + offset


def classify(
    probabilities: np.ndarray, threshold: float, how: Literal["max", "mean"]
) -> npt.NDArray[np.uint8]:
    """``(Z, C)`` probabilities -> ``(C,)`` 0/1."""
    return positive(aggregate(probabilities, how), threshold).astype(np.uint8)


def regress(
    values: np.ndarray, scale: float, offset: float, how: Aggregate
) -> npt.NDArray[np.float64]:
    """``(Z, R)`` values -> ``(R,)``."""
    return reported(aggregate(values, how), scale, offset)


def box_iou(box: np.ndarray, others: np.ndarray) -> npt.NDArray[np.float64]:
    """IoU of one ``[x1, y1, x2, y2]`` box with each of ``(K, 4)`` boxes (0 for empty unions)."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)
    areas = np.clip(others[:, 2] - others[:, 0], 0, None) * np.clip(
        others[:, 3] - others[:, 1], 0, None
    )
    union = area + areas - inter
    iou: npt.NDArray[np.float64] = np.divide(
        inter, union, out=np.zeros(len(others)), where=union > 0
    )
    return iou


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def detect(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    scale: tuple[float, float],
    image_size: tuple[int, int],
) -> dict[str, np.ndarray]:
    """``(K, 4)`` boxes and ``(K, C)`` scores of one image -> the DetectionStrategy's input.

    ``scale`` is ``(row, col)`` image pixels per model-input pixel; ``image_size`` is ``(H, W)``.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 2:
        raise ValueError(
            f"expected boxes (K, 4) and scores (K, C), got {boxes.shape}, {scores.shape}"
        )
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} score rows")
    height, width = image_size
    scaled = boxes.astype(np.float64) * np.array([scale[1], scale[0], scale[1], scale[0]])
    scaled[:, [0, 2]] = np.clip(scaled[:, [0, 2]], 0, width)
    scaled[:, [1, 3]] = np.clip(scaled[:, [1, 3]], 0, height)
    valid = (
        np.all(np.isfinite(scaled), axis=1)
        & np.all(np.isfinite(scores), axis=1)
        & (scaled[:, 2] > scaled[:, 0])
        & (scaled[:, 3] > scaled[:, 1])
    )
    positive = (scores >= score_threshold) & valid[:, None]
    for c in range(scores.shape[1]):
        candidates = np.flatnonzero(positive[:, c])
        if candidates.size > 1:
            kept = candidates[nms(scaled[candidates], scores[candidates, c], iou_threshold)]
            positive[np.setdiff1d(candidates, kept), c] = False
    confidence = np.where(positive, scores, -np.inf).max(axis=1, initial=-np.inf)
    rows = np.flatnonzero(positive.any(axis=1))
    rows = rows[np.argsort(-confidence[rows], kind="stable")][:max_detections]
    return {
        "bbox_pred": np.round(scaled[rows], 2),
        "cls_pred": positive[rows].astype(np.uint8),
        "confidence_score": confidence[rows].astype(np.float64),
    }


MASK_BLOCK_SLICES = 16
"""Slices of full-resolution masks handled at once outside a Triton batch (unpacked for the
result, labelled as one slab of components, fed by :func:`segment`): bounds the unpacked
temporaries of a long volume."""


SLICES_PER_PUT = 4
"""Slices of one batch resized at once by :meth:`MaskStack.put`."""


def resize_mask(
    maps: np.ndarray, threshold: float | None, size: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """``(k, h, w)`` maps -> ``(k, H, W)`` masks at the image's size.

    Probabilities (``threshold`` set): exactly ``bilinear_resize(p) >= threshold`` with the
    preprocessing's pixel-centre alignment, computed without resizing the probabilities. A
    bilinear value is a convex combination of its 4 nearest samples, so wherever those agree
    about the threshold the answer is theirs; only pixels between disagreeing samples (the
    boundary, a few percent) are interpolated. Smooth contours at the cost of a nearest-neighbour
    resize. A ``mask`` output (``threshold`` None) is resized by nearest neighbour.
    """
    height, width = maps.shape[1:]
    rows, cols = _linear(height, size[0]), _linear(width, size[1])
    if threshold is None:
        nearest: npt.NDArray[np.bool_] = (maps != 0)[
            :, _nearest(height, size[0])[:, None], _nearest(width, size[1])[None, :]
        ]
        return nearest
    low = maps >= threshold
    r0, r1, wy = rows
    c0, c1, wx = cols
    below = low[:, np.minimum(np.arange(height) + 1, height - 1)]
    right = low[:, :, np.minimum(np.arange(width) + 1, width - 1)]
    corner = below[:, :, np.minimum(np.arange(width) + 1, width - 1)]
    mixed = (low != below) | (low != right) | (low != corner)
    result: npt.NDArray[np.bool_] = low.take(r0, axis=1).take(c0, axis=2)
    z, y, x = np.nonzero(mixed.take(r0, axis=1).take(c0, axis=2))
    top = maps[z, r0[y], c0[x]] * (1.0 - wx[x]) + maps[z, r0[y], c1[x]] * wx[x]
    bottom = maps[z, r1[y], c0[x]] * (1.0 - wx[x]) + maps[z, r1[y], c1[x]] * wx[x]
    result[z, y, x] = top * (1.0 - wy[y]) + bottom * wy[y] >= threshold
    return result


def _linear(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sample pairs and weights per output pixel: pixel-centre, edges clamped."""
    centres = np.clip((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0, size_in - 1)
    first = np.floor(centres).astype(np.intp)
    second = np.minimum(first + 1, size_in - 1)
    return first, second, centres - first


def _nearest(size_in: int, size_out: int) -> npt.NDArray[np.intp]:
    """Source index of each output pixel under pixel-centre alignment."""
    centres = (np.arange(size_out) + 0.5) * (size_in / size_out)
    return np.minimum(centres.astype(np.intp), size_in - 1)


def index_order(slice_images: Sequence[AiImage]) -> npt.NDArray[np.intp]:
    """Stack positions sorted by the entries' ``index``: where the strategy looks for slice z."""
    return np.argsort(np.array([image.index for image in slice_images]), kind="stable")


def segment(
    maps: np.ndarray,
    *,
    threshold: float | None,
    instances: bool,
    volumetric: bool,
    image_size: tuple[int, int],
    order: npt.NDArray[np.intp] | None = None,
) -> np.ndarray:
    """``(Z, C, h, w)`` model maps -> ``(C, Z, H, W)`` masks (bool) or instance label maps.

    Slot z of the result holds stack slice ``order[z]``: the strategy puts slot z on the z-th
    entry in ``index`` order, so ``order`` = :func:`index_order` of the stack's entries.
    Instances are labelled in stack order, whatever the entries' indices say, so that only
    slices adjacent in the volume connect (:mod:`~gateway.pipelines.components`). The same as
    feeding :class:`MaskStack` the whole output at once.
    """
    if maps.ndim != 4:
        raise ValueError(f"expected (slices, classes, rows, cols), got {maps.shape}")
    slices, classes = maps.shape[:2]
    stack = MaskStack(classes, slices, image_size)
    for start in range(0, slices, MASK_BLOCK_SLICES):
        stack.put(start, maps[start : start + MASK_BLOCK_SLICES], threshold)
    return stack.result(instances=instances, volumetric=volumetric, order=order)


class MaskStack:
    """A volume's full-resolution masks, filled batch by batch as the model's answers arrive.

    Each batch of ``(k, C, h, w)`` maps is resized and thresholded (:func:`resize_mask`) at once
    and kept bit-packed along rows (an eighth of a byte per voxel), so a 300-slice CT never holds
    its float32 probability maps (150 MiB at 2 x 256 x 256) or unpacked masks whole: only the
    result (:meth:`result`) is full size. Batches may arrive in any order; each slice is written
    exactly once.
    """

    def __init__(self, classes: int, slices: int, image_size: tuple[int, int]) -> None:
        self.classes = classes
        self.slices = slices
        self.image_size = image_size
        height, width = image_size
        self._packed = np.zeros((classes, slices, height, (width + 7) // 8), dtype=np.uint8)

    def put(self, start: int, maps: np.ndarray, threshold: float | None) -> None:
        """Stack slices ``start : start + len(maps)`` from their ``(k, C, h, w)`` maps."""
        if maps.ndim != 4 or maps.shape[1] != self.classes:
            raise ValueError(
                f"expected (slices, {self.classes}, rows, cols) maps, got {maps.shape}"
            )
        stop = start + maps.shape[0]
        if start < 0 or stop > self.slices:
            raise ValueError(f"slices {start}:{stop} are outside the stack of {self.slices}")
        # A few slices at a time: the full-resolution temporaries of resize_mask stay small.
        for first in range(0, maps.shape[0], SLICES_PER_PUT):
            part = maps[first : first + SLICES_PER_PUT]
            at = start + first
            for c in range(self.classes):
                mask = resize_mask(part[:, c], threshold, self.image_size)
                self._packed[c, at : at + len(part)] = np.packbits(mask, axis=-1)

    def put_masks(self, start: int, masks: npt.NDArray[np.bool_]) -> None:
        """Stack slices ``start : start + k`` from ``(C, k, H, W)`` masks at the image's size."""
        if masks.ndim != 4 or masks.shape[0] != self.classes or masks.shape[2:] != self.image_size:
            raise ValueError(
                f"expected ({self.classes}, slices, {self.image_size[0]}, {self.image_size[1]}) "
                f"masks, got {masks.shape}"
            )
        self._packed[:, start : start + masks.shape[1]] = np.packbits(masks, axis=-1)

    def masks(self, channel: int) -> MaskSource:
        """Masks of stack slices ``start:stop`` of one class, unpacked on demand."""

        def unpack(start: int, stop: int) -> npt.NDArray[np.bool_]:
            return self._unpack(channel, slice(start, stop))

        return unpack

    def _unpack(self, channel: int, slices: slice | npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        packed, width = self._packed[channel, slices], self.image_size[1]
        mask: npt.NDArray[np.bool_] = np.unpackbits(packed, axis=-1, count=width).view(bool)
        return mask

    def result(
        self, *, instances: bool, volumetric: bool, order: npt.NDArray[np.intp] | None = None
    ) -> np.ndarray:
        """``(C, Z, H, W)`` masks (bool) or instance labels, slot z holding stack slice
        ``order[z]`` (see :func:`segment`)."""
        slices, classes = self.slices, self.classes
        source = np.arange(slices) if order is None else np.asarray(order)
        if not instances:
            result = np.empty((classes, slices, *self.image_size), dtype=bool)
            for c in range(classes):
                for start in range(0, slices, MASK_BLOCK_SLICES):
                    picked = source[start : start + MASK_BLOCK_SLICES]
                    result[c, start : start + len(picked)] = self._unpack(c, picked)
            return result
        slot = np.empty(slices, dtype=np.intp)
        slot[source] = np.arange(slices)
        found = [
            find_components(self.masks(c), slices, volumetric=volumetric, slab=MASK_BLOCK_SLICES)
            for c in range(classes)
        ]
        labels = np.empty(
            (classes, slices, *self.image_size), dtype=label_dtype(max(f.count for f in found))
        )
        for c, components in enumerate(found):
            write_components(components, labels[c], slot)
        return labels
