"""The measures behind the README figures."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import average_precision, box_iou, dice, nms, roc_auc


def test_roc_auc() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == 0.75
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([1, 1], [0.2, 0.3])


def test_box_iou_and_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]], dtype=float)
    np.testing.assert_allclose(box_iou(boxes[:1], boxes)[0], [1.0, 0.5, 0.0])
    kept = nms(boxes, [0.9, 0.8, 0.7], iou_threshold=0.4)
    assert kept.tolist() == [0, 2]
    assert nms(boxes, [0.9, 0.8, 0.7], iou_threshold=0.6).tolist() == [0, 1, 2]
    assert nms(np.zeros((0, 4)), [], 0.5).tolist() == []


def test_average_precision() -> None:
    truth = [np.array([[0, 0, 10, 10]]), np.array([[5, 5, 15, 15]])]
    perfect = [(t, np.array([0.9])) for t in truth]
    assert average_precision(perfect, truth) == pytest.approx(1.0)
    with_false_alarm = [
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.9, 0.95])),
        (truth[1], np.array([0.5])),
    ]
    assert average_precision(with_false_alarm, truth) == pytest.approx(2 / 3)
    duplicate = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8]))]
    assert average_precision(duplicate, truth[:1]) == pytest.approx(1.0)
    assert average_precision([(np.zeros((0, 4)), np.zeros(0))], truth[:1]) == 0.0


def test_dice() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    assert dice(a, b) == 1.0
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
