"""Each example model gives sensible answers on phantoms whose truth is known.

Inputs are 512 x 512 phantoms prepared as the gateway prepares a CT (resize, lung window) or a
PNG rendering (8-bit, / 255). Every test runs twice through the ``infer`` fixture: with ONNX
Runtime in-process, and over gRPC against the real local Triton (marked ``e2e``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from gateway.pipelines import postprocessing as post
from gateway.pipelines.params import DetectionOutput
from training.cards import CARDS
from training.evaluate import Source, gateway_input, upsample
from training.metrics import box_iou, dice
from training.phantoms import PhantomSlice, phantom_slice, phantom_volume

SOURCES: tuple[Source, ...] = ("hu", "png")

Infer = Callable[[str, npt.NDArray[np.float32]], dict[str, npt.NDArray[Any]]]
"""The ``infer`` fixture: model name and ``(N, 1, S, S)`` batch -> outputs by name."""


def _slices(diameters: list[float] | int, seeds: range) -> list[PhantomSlice]:
    result = []
    for seed in seeds:
        phantom = phantom_slice(np.random.default_rng(seed), 512, diameters)
        expected = len(diameters) if isinstance(diameters, list) else diameters
        assert len(phantom.lesions) == expected, "the phantom could not place its nodules"
        result.append(phantom)
    return result


def _inputs(model: str, phantoms: list[PhantomSlice], source: Source) -> npt.NDArray[np.float32]:
    hu = np.stack([p.hu for p in phantoms])
    return gateway_input(hu, CARDS[model].size, source)


@pytest.mark.parametrize("source", SOURCES)
def test_classifier_is_right_on_clear_cases(infer: Infer, source: Source) -> None:
    empty = _slices(0, range(100, 104))
    large = _slices([20.0], range(110, 114))
    small = _slices([8.0], range(120, 124))
    model = "lesion_classifier"
    probabilities = infer(model, _inputs(model, empty + large + small, source))["probabilities"]
    nodule, large_nodule = probabilities[:, 0] >= 0.5, probabilities[:, 1] >= 0.5
    assert not nodule[:4].any() and not large_nodule[:4].any(), probabilities[:4]
    assert nodule[4:8].all() and large_nodule[4:8].all(), probabilities[4:8]
    assert nodule[8:].sum() >= 3 and not large_nodule[8:].any(), probabilities[8:]


@pytest.mark.parametrize("source", SOURCES)
def test_regressor_measures_a_known_nodule(infer: Infer, source: Source) -> None:
    diameter = 16.0
    phantoms = _slices([diameter], range(200, 203)) + _slices(0, range(210, 212))
    model = "lesion_size_regressor"
    values = infer(model, _inputs(model, phantoms, source))["values"]
    area = math.pi * diameter**2 / 4.0
    np.testing.assert_allclose(values[:3, 0], diameter, atol=3.0)
    np.testing.assert_allclose(values[:3, 1], area, rtol=0.35)
    assert (values[3:, 0] < 2.0).all() and (values[3:, 1] < 25.0).all(), values[3:]


def _kept_boxes(
    boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], scale: float
) -> npt.NDArray[np.float64]:
    """The gateway's own detection post-processing (threshold, NMS, scale to the 512 x 512
    original) with the parameters of the model's config."""
    output = DetectionOutput.model_validate(CARDS["lesion_detector"].output)
    kept = post.detect(
        boxes,
        scores,
        score_threshold=output.score_threshold,
        iou_threshold=output.iou_threshold,
        max_detections=output.max_detections,
        scale=(scale, scale),
        image_size=(512, 512),
    )
    result: npt.NDArray[np.float64] = kept["bbox_pred"]
    return result


@pytest.mark.parametrize("source", SOURCES)
def test_detector_finds_the_known_nodule(infer: Infer, source: Source) -> None:
    phantoms = _slices([14.0], range(300, 302)) + _slices([22.0], range(310, 312))
    empty = _slices(0, range(320, 322))
    model = "lesion_detector"
    outputs = infer(model, _inputs(model, phantoms + empty, source))
    scale = 512 / CARDS[model].size
    for index, phantom in enumerate(phantoms):
        kept = _kept_boxes(outputs["boxes"][index], outputs["scores"][index], scale)
        assert kept.shape[0] >= 1, "no box above the score threshold"
        assert box_iou(kept, [phantom.lesions[0].box]).max() > 0.5, kept
        assert kept.shape[0] <= 2, kept
    for offset in range(len(empty)):
        index = len(phantoms) + offset
        kept = _kept_boxes(outputs["boxes"][index], outputs["scores"][index], scale)
        assert kept.shape[0] <= 1, kept


@pytest.mark.parametrize("source", SOURCES)
def test_lung_segmenter_reaches_its_documented_dice(
    infer: Infer, source: Source, records: dict[str, dict[str, Any]]
) -> None:
    model = "lung_segmenter"
    phantoms = _slices(1, range(400, 404))
    probabilities = infer(model, _inputs(model, phantoms, source))["probabilities"]
    documented = records[model]["held_out"][source]
    threshold = float(CARDS[model].output["threshold"])
    for channel, name in enumerate(("left_lung", "right_lung")):
        scores = [
            dice(upsample(probabilities[i, channel], (512, 512)) >= threshold, p.masks[name])
            for i, p in enumerate(phantoms)
        ]
        assert np.mean(scores) >= documented[f"dice_{name}"] - 0.05, (name, scores)


@pytest.mark.parametrize("source", SOURCES)
def test_lesion_segmenter_3d_finds_each_nodule(
    infer: Infer, source: Source, records: dict[str, dict[str, Any]]
) -> None:
    model = "lesion_segmenter_3d"
    volume = phantom_volume(np.random.default_rng(500), 24, 512, [12.0, 20.0])
    assert len(volume.lesions) == 2
    probabilities = infer(model, gateway_input(volume.hu, CARDS[model].size, source))[
        "probabilities"
    ]
    assert probabilities.shape == (24, 2, 256, 256)
    threshold = float(CARDS[model].output["threshold"])
    predicted = np.stack([upsample(p, (512, 512)) for p in probabilities], axis=1) >= threshold
    documented = records[model]["held_out"][source]
    assert dice(predicted[0], volume.lung) >= documented["dice_lung"] - 0.05
    assert dice(predicted[1], volume.lesion_labels > 0) >= documented["dice_nodule"] - 0.15
    components, count = ndimage.label(predicted[1], structure=np.ones((3, 3, 3), dtype=bool))
    hits = {int(v) for v in np.unique(volume.lesion_labels[components > 0]) if v > 0}
    assert hits == {1, 2}
    assert count <= 3, "more than one spurious nodule component"
