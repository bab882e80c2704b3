"""The accuracy measures quoted in the model READMEs (numpy only, shared with the tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["average_precision", "box_iou", "dice", "nms", "roc_auc"]

FloatArray = npt.NDArray[np.float64]


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    positives, negatives = values[truth], values[~truth]
    if positives.size == 0 or negatives.size == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    rank_sum = ranks[truth].sum()
    u = rank_sum - positives.size * (positives.size + 1) / 2.0
    return float(u / (positives.size * negatives.size))


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` ``x1, y1, x2, y2`` boxes -> ``(N, M)``."""
    first = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_a = np.clip(first[:, 2:] - first[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(second[:, 2:] - second[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - overlap
    result: FloatArray = np.where(union > 0.0, overlap / np.where(union > 0, union, 1.0), 0.0)
    return result


def nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float) -> npt.NDArray[np.intp]:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    candidates = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = list(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"))
    kept: list[int] = []
    while order:
        best = int(order.pop(0))
        kept.append(best)
        if order:
            overlaps = box_iou(candidates[best], candidates[order])[0]
            order = [i for i, o in zip(order, overlaps, strict=True) if o <= iou_threshold]
    return np.asarray(kept, dtype=np.intp)


def average_precision(
    detections: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    truths: Sequence[npt.ArrayLike],
    iou_threshold: float = 0.5,
) -> float:
    """Single-class AP over a set of images (all-point interpolation, as in PASCAL VOC 2010+).

    ``detections[i]`` is ``(boxes (N, 4), scores (N,))`` of image ``i`` and ``truths[i]`` its
    ground-truth boxes; each truth matches at most one detection, best score first.
    """
    records: list[tuple[float, bool]] = []
    total = 0
    for (boxes, scores), truth in zip(detections, truths, strict=True):
        gt = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
        total += gt.shape[0]
        predicted = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        confidence = np.asarray(scores, dtype=np.float64).reshape(-1)
        taken = np.zeros(gt.shape[0], dtype=bool)
        overlaps = box_iou(predicted, gt)
        for index in np.argsort(-confidence, kind="stable"):
            hit = False
            if gt.shape[0]:
                candidates = np.where(taken, -1.0, overlaps[index])
                best = int(np.argmax(candidates))
                if candidates[best] >= iou_threshold:
                    taken[best] = True
                    hit = True
            records.append((float(confidence[index]), hit))
    if total == 0:
        raise ValueError("average_precision needs at least one ground-truth box")
    records.sort(key=lambda record: -record[0])
    hits = np.array([hit for _, hit in records], dtype=np.float64)
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, hits.size + 1)
    recall = true_positives / total
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
    previous = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - previous) * envelope))


def dice(prediction: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a = np.asarray(prediction, dtype=bool)
    b = np.asarray(truth, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * float(np.logical_and(a, b).sum()) / total
