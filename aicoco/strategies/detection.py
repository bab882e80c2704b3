"""Detection (2D): boxes with per-box class vectors, scores and regression values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from aicoco.errors import AiCOCOFormatError
from aicoco.models import AiAnnotation, AiCOCOOutput, AiObject, AiRegressionItem
from aicoco.strategies.base import OutputStrategy, Skeleton, as_array, binary_values
from aicoco.strategies.regression import finite

_KEYS = ("bbox_pred", "cls_pred", "confidence_score", "regression_value")


class DetectionStrategy(OutputStrategy):
    """``model_out``: a mapping with

    - ``bbox_pred`` (N, 4): ``[x1, y1, x2, y2]`` in pixels of the image, x1 <= x2, y1 <= y2;
    - ``cls_pred`` (N, C): 0/1 per declared category (several 1s: a multi-label box);
    - ``confidence_score`` (N,), optional: written as the object's ``confidence``;
    - ``regression_value`` (N, R), optional: the object's ``regressions``.

    Each box is one object and one annotation (``bbox``, ``segmentation: null``) on the single
    image. Categories with ``display: false`` are dropped from a box's classes, and a box left
    with no class is dropped (nothing to draw), as FLaVor does. Unknown keys are refused:
    a misspelt ``confidence`` would otherwise vanish silently.
    """

    def format(self, model_out: Any, skeleton: Skeleton) -> AiCOCOOutput:
        if len(skeleton.images) != 1:
            raise AiCOCOFormatError(
                f"expected exactly one image entry for 2D detection, got {len(skeleton.images)}"
            )
        boxes, classes, scores, values = _unpack(
            model_out, len(skeleton.category_specs), len(skeleton.regression_specs)
        )
        shown = np.array([spec.display for spec in skeleton.category_specs], dtype=bool)
        document = skeleton.output()
        image_id = skeleton.images[0].id
        category_ids = [category.id for category in skeleton.categories]
        for i in range(len(boxes)):
            kept = [category_ids[c] for c in np.flatnonzero(classes[i] & shown).tolist()]
            if not kept:
                continue
            extras: dict[str, Any] = {}
            if scores is not None:
                extras["confidence"] = float(scores[i])
            items = None
            if values is not None:
                items = [
                    AiRegressionItem(regression_id=regression.id, value=value)
                    for regression, value in zip(
                        skeleton.regressions, values[i].tolist(), strict=False
                    )
                ]
            obj = AiObject(id=skeleton.ids(), category_ids=kept, regressions=items, **extras)
            document.objects.append(obj)
            document.annotations.append(
                AiAnnotation(
                    id=skeleton.ids(),
                    image_id=image_id,
                    object_id=obj.id,
                    iscrowd=0,
                    bbox=[boxes[i].tolist()],
                    segmentation=None,
                )
            )
        return document


def _unpack(
    model_out: Any, n_classes: int, n_regressions: int
) -> tuple[
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any] | None,
    np.ndarray[Any, Any] | None,
]:
    if not isinstance(model_out, Mapping):
        raise AiCOCOFormatError(
            f"expected a mapping with keys {', '.join(_KEYS[:2])} (and optionally "
            f"{', '.join(_KEYS[2:])}), got {type(model_out).__name__}"
        )
    unknown = sorted(set(model_out) - set(_KEYS))
    missing = [key for key in _KEYS[:2] if key not in model_out]
    if unknown or missing:
        raise AiCOCOFormatError(
            f"expected keys {', '.join(_KEYS[:2])} (and optionally {', '.join(_KEYS[2:])}); "
            f"missing {missing}, unknown {unknown}"
        )
    boxes = _matrix(model_out["bbox_pred"], "bbox_pred", 4, "[x1, y1, x2, y2]")
    n = len(boxes)
    boxes = finite(boxes, "bbox_pred")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        raise AiCOCOFormatError(
            f"expected `bbox_pred` rows [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, "
            f"got {boxes[i].tolist()} at row {i}"
        )
    classes = binary_values(
        _matrix(model_out["cls_pred"], "cls_pred", n_classes, "one 0/1 per category", rows=n),
        "cls_pred",
    )
    scores = None
    if model_out.get("confidence_score") is not None:
        scores = as_array(model_out["confidence_score"], "confidence_score")
        if scores.size == 0 and n == 0:
            scores = scores.reshape(0)
        if scores.shape != (n,):
            raise AiCOCOFormatError(
                f"expected `confidence_score` of shape ({n},), one per box, got {scores.shape}"
            )
        scores = finite(scores, "confidence_score")
    values = None
    if model_out.get("regression_value") is not None:
        values = finite(
            _matrix(
                model_out["regression_value"],
                "regression_value",
                n_regressions,
                "one value per declared regression",
                rows=n,
            ),
            "regression_value",
        )
    return boxes, classes, scores, values


def _matrix(
    value: Any, name: str, width: int, row: str, rows: int | None = None
) -> np.ndarray[Any, Any]:
    array = as_array(value, name)
    if array.size == 0 and rows in (None, 0):
        array = array.reshape(0, width)
    if array.ndim != 2 or array.shape[1] != width or (rows is not None and array.shape[0] != rows):
        expected = f"({'N' if rows is None else rows}, {width})"
        raise AiCOCOFormatError(
            f"expected `{name}` of shape {expected}, each row {row}, got shape {array.shape}"
        )
    return array
