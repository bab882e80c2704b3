"""Held-out accuracy of the exported ONNX models (ONNX Runtime and numpy, no torch).

The figures in the READMEs are measured here on the committed artefact, on phantoms that the
training never saw (their own seeds), prepared the way the gateway prepares real inputs: the
whole 512 x 512 slice resized to the model size, then windowed (``hu``), or rendered to 8 bits
first and divided by 255 (``png``). Segmentations are scored at 512 x 512 after resizing the
probabilities back, as the gateway returns them. Each figure comes with a chance baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from scipy import ndimage

from training.cards import ModelCard
from training.datasets import LESION, SliceSet, make_slice_set, model_input
from training.metrics import average_precision, box_iou, dice, nms, roc_auc
from training.phantoms import (
    LARGE_NODULE_MM,
    LUNG_WINDOW,
    PhantomVolume,
    phantom_slice,
    phantom_volume,
    resize_bilinear,
    window_to_uint8,
)

__all__ = ["EVALUATORS", "Source", "gateway_input", "infer", "open_session", "upsample"]

Source = Literal["hu", "png"]
FloatArray = npt.NDArray[np.float32]
Results = dict[str, Any]

_SLICE_SEED = 9_001
_SEGMENTATION_SEED = 9_002
_VOLUME_SEED = 9_003
_CALIBRATION_SEED = 9_004


def open_session(model: str | bytes) -> ort.InferenceSession:
    """A CPU session limited to two threads, the size of this machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def infer(
    session: ort.InferenceSession, images: FloatArray, batch: int
) -> dict[str, npt.NDArray[Any]]:
    """Run ``images`` ``(N, 1, S, S)`` in batches of ``batch``; outputs concatenated by name."""
    names = [output.name for output in session.get_outputs()]
    parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in names}
    for start in range(0, images.shape[0], batch):
        outputs = session.run(names, {"image": images[start : start + batch]})
        for name, value in zip(names, outputs, strict=True):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def gateway_input(hu: npt.NDArray[np.int16], size: int, source: Source) -> FloatArray:
    """``(N, H, W)`` HU -> ``(N, 1, size, size)``, following the gateway's preprocessing rule.

    ``hu``: resize, then the lung window. ``png``: the lung-window 8-bit rendering a client
    would upload, resized, divided by 255.
    """
    if source == "hu":
        resized = resize_bilinear(hu.astype(np.float32), (size, size))
        return model_input(np.rint(resized).astype(np.int16))
    rendering = window_to_uint8(hu, *LUNG_WINDOW).astype(np.float32)
    result: FloatArray = (resize_bilinear(rendering, (size, size)) / np.float32(255.0))[:, None]
    return result


def upsample(probabilities: FloatArray, shape: tuple[int, int]) -> FloatArray:
    """``(..., h, w)`` -> ``(..., H, W)`` bilinear, as the gateway resizes segmentations back."""
    return resize_bilinear(probabilities, shape)


def _slice_input(data: SliceSet, source: Source) -> FloatArray:
    """Input of an already resized set; ``png`` quantises the windowed slice to 8 bits."""
    unit = model_input(data.hu)
    if source == "png":
        unit = np.rint(unit * np.float32(255.0)) / np.float32(255.0)
    return unit


def _held_out_slices(size: int, count: int) -> SliceSet:
    return make_slice_set(_SLICE_SEED, count, size)


def _slice_description(count: int) -> str:
    return (
        f"{count} held-out phantom slices (own seed), half generated at 512 x 512 and resized "
        "to the model size, half generated at the model size; half have no nodule, the others "
        "1 to 3 nodules of 5 to 30 mm (log-uniform)."
    )


def evaluate_lesion_classifier(card: ModelCard, session: ort.InferenceSession) -> Results:
    data = _held_out_slices(card.size, 600)
    count = data.hu.shape[0]
    labels = np.zeros((count, 2), dtype=bool)
    largest, _ = _size_targets(data)
    labels[:, 0] = largest > 0
    labels[:, 1] = largest >= LARGE_NODULE_MM
    held_out: dict[str, dict[str, float]] = {"baseline": {}}
    for source in ("hu", "png"):
        probabilities = infer(session, _slice_input(data, source), card.max_batch_size)[
            "probabilities"
        ]
        held_out[source] = {}
        small = labels[:, 0] & (largest < _SMALL_NODULE_MM)
        held_out[source]["sensitivity_small_nodule"] = float(
            (probabilities[small, 0] >= 0.5).mean()
        )
        for channel, name in enumerate(("nodule", "large_nodule")):
            truth, score = labels[:, channel], probabilities[:, channel]
            held_out[source][f"auc_{name}"] = roc_auc(truth, score)
            held_out[source][f"accuracy_{name}"] = float(((score >= 0.5) == truth).mean())
            prevalence = float(truth.mean())
            held_out["baseline"][f"auc_{name}"] = 0.5
            held_out["baseline"][f"accuracy_{name}"] = max(prevalence, 1.0 - prevalence)
    return {
        "held_out": held_out,
        "held_out_description": _slice_description(count)
        + " Baselines: a constant score (AUC 0.5) and the majority class (accuracy).",
    }


_SMALL_NODULE_MM = 8.0


def _size_targets(data: SliceSet) -> tuple[FloatArray, FloatArray]:
    count = data.hu.shape[0]
    largest = np.zeros(count, dtype=np.float32)
    area = np.zeros(count, dtype=np.float32)
    for index in range(count):
        diameters = data.lesions_of(index)[:, 3]
        if diameters.size:
            largest[index] = diameters.max()
            area[index] = float(np.sum(math.pi * diameters.astype(np.float64) ** 2 / 4.0))
    return largest, area


def evaluate_lesion_size_regressor(card: ModelCard, session: ort.InferenceSession) -> Results:
    data = _held_out_slices(card.size, 600)
    largest, area = _size_targets(data)
    with_nodule = largest > 0
    held_out: dict[str, dict[str, float]] = {}

    def errors(diameter: FloatArray, total: FloatArray) -> dict[str, float]:
        return {
            "bias_diameter_nodule_mm": float((diameter - largest)[with_nodule].mean()),
            "mae_diameter_mm": float(np.abs(diameter - largest).mean()),
            "mae_diameter_nodule_mm": float(np.abs(diameter - largest)[with_nodule].mean()),
            "mae_area_mm2": float(np.abs(total - area).mean()),
            "mae_area_nodule_mm2": float(np.abs(total - area)[with_nodule].mean()),
        }

    for source in ("hu", "png"):
        values = infer(session, _slice_input(data, source), card.max_batch_size)["values"]
        held_out[source] = errors(values[:, 0], values[:, 1])
    count = largest.size
    held_out["baseline"] = errors(
        np.full(count, np.median(largest), dtype=np.float32),
        np.full(count, np.median(area), dtype=np.float32),
    )
    held_out["baseline"].pop("bias_diameter_nodule_mm")
    description = _slice_description(count) + (
        " Targets are exact (from the phantom's geometry); 0 for a slice without nodule. "
        "Baseline: the best constant prediction (the held-out median)."
    )
    return {"held_out": held_out, "held_out_description": description}


def _truth_boxes(data: SliceSet, index: int) -> FloatArray:
    lesions = data.lesions_of(index)
    row, col, radius = lesions[:, 0], lesions[:, 1], lesions[:, 2]
    boxes: FloatArray = np.stack([col - radius, row - radius, col + radius, row + radius], axis=1)
    return boxes


def _detection_scores(
    detections: list[tuple[FloatArray, FloatArray]],
    truths: list[FloatArray],
    score_threshold: float,
    iou_threshold: float,
) -> dict[str, float]:
    found = false_alarms = total = 0
    matched_ious: list[float] = []
    for (boxes, scores), truth in zip(detections, truths, strict=True):
        keep = scores >= score_threshold
        kept_boxes, kept_scores = boxes[keep], scores[keep]
        kept_boxes = kept_boxes[nms(kept_boxes, kept_scores, iou_threshold)]
        total += truth.shape[0]
        overlaps = box_iou(kept_boxes, truth)
        taken = np.zeros(truth.shape[0], dtype=bool)
        for row in overlaps:
            candidates = np.where(taken, -1.0, row)
            best = int(np.argmax(candidates)) if candidates.size else -1
            if best >= 0 and candidates[best] >= 0.5:
                taken[best] = True
                matched_ious.append(float(candidates[best]))
            else:
                false_alarms += 1
        found += int(taken.sum())
    kept = found + false_alarms
    return {
        "ap50": average_precision(detections, truths, 0.5),
        "recall": found / total,
        "precision": found / kept if kept else 1.0,
        "mean_iou": float(np.mean(matched_ious)) if matched_ious else 0.0,
    }


def evaluate_lesion_detector(card: ModelCard, session: ort.InferenceSession) -> Results:
    data = _held_out_slices(card.size, 600)
    count = data.hu.shape[0]
    truths = [_truth_boxes(data, index) for index in range(count)]
    score_threshold = float(card.output["score_threshold"])
    iou_threshold = float(card.output["iou_threshold"])
    held_out: dict[str, dict[str, float]] = {}
    for source in ("hu", "png"):
        outputs = infer(session, _slice_input(data, source), card.max_batch_size)
        detections = [(outputs["boxes"][i], outputs["scores"][i, :, 0]) for i in range(count)]
        held_out[source] = _detection_scores(detections, truths, score_threshold, iou_threshold)
    rng = np.random.default_rng(_CALIBRATION_SEED)
    radii = data.lesions[:, 3]
    top_k = card.outputs[0].dims[0]
    guesses = []
    for index in range(count):
        lung = np.argwhere((data.labels[index] & ~np.uint8(LESION)) > 0).astype(np.float32)
        centres = lung[rng.integers(0, lung.shape[0], top_k)] + 0.5
        radius = rng.choice(radii, top_k)
        boxes = np.stack(
            [
                centres[:, 1] - radius,
                centres[:, 0] - radius,
                centres[:, 1] + radius,
                centres[:, 0] + radius,
            ],
            axis=1,
        ).astype(np.float32)
        guesses.append((boxes, rng.random(top_k).astype(np.float32)))
    chance = _detection_scores(guesses, truths, score_threshold, iou_threshold)
    held_out["baseline"] = {"ap50": chance["ap50"]}
    description = _slice_description(count) + (
        " A detection is correct at IoU >= 0.5 with an unmatched nodule's box. Baseline: "
        f"{top_k} boxes per slice of nodule-like sizes at random places inside the lungs."
    )
    return {"held_out": held_out, "held_out_description": description}


def _segmentation_slices(
    count: int, seed: int
) -> Iterator[tuple[npt.NDArray[np.int16], dict[str, npt.NDArray[np.bool_]]]]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        phantom = phantom_slice(rng, 512, noise_hu=float(rng.uniform(8.0, 35.0)))
        yield phantom.hu, phantom.masks


def evaluate_lung_segmenter(card: ModelCard, session: ort.InferenceSession) -> Results:
    classes = [str(c["name"]) for c in card.categories]
    threshold = float(card.output["threshold"])
    count = 200
    prior = np.zeros((len(classes), 512, 512), dtype=np.float64)
    for _, masks in _segmentation_slices(count, _CALIBRATION_SEED):
        prior += np.stack([masks[name] for name in classes])
    average_mask = prior / count >= 0.5
    scores: dict[str, dict[str, list[float]]] = {
        source: {name: [] for name in classes} for source in ("hu", "png", "baseline")
    }
    for hu, masks in _segmentation_slices(count, _SEGMENTATION_SEED):
        for source in ("hu", "png"):
            images = gateway_input(hu[None], card.size, source)
            probabilities = infer(session, images, 1)["probabilities"][0]
            predicted = upsample(probabilities, hu.shape) >= threshold
            for channel, name in enumerate(classes):
                scores[source][name].append(dice(predicted[channel], masks[name]))
        for channel, name in enumerate(classes):
            scores["baseline"][name].append(dice(average_mask[channel], masks[name]))
    held_out = {
        source: {f"dice_{name}": float(np.mean(values)) for name, values in by_class.items()}
        for source, by_class in scores.items()
    }
    description = (
        f"{count} held-out 512 x 512 phantom slices (own seed), resized to {card.size} x "
        f"{card.size} for the model; probabilities resized back to 512 x 512 and thresholded "
        f"at {threshold}; Dice per slice, averaged. Baseline: a fixed average-lung mask (the "
        f"pixels that are lung in at least half of {count} other phantoms)."
    )
    return {"held_out": held_out, "held_out_description": description}


def _volume_prediction(
    card: ModelCard, session: ort.InferenceSession, volume: PhantomVolume, source: Source
) -> npt.NDArray[np.bool_]:
    images = gateway_input(volume.hu, card.size, source)
    probabilities = infer(session, images, card.max_batch_size)["probabilities"]
    shape = (volume.hu.shape[1], volume.hu.shape[2])
    threshold = float(card.output["threshold"])
    predicted = np.empty((2, *volume.hu.shape), dtype=bool)
    for z in range(volume.hu.shape[0]):
        predicted[:, z] = upsample(probabilities[z], shape) >= threshold
    return predicted


def _nodule_hits(predicted: npt.NDArray[np.bool_], volume: PhantomVolume) -> tuple[int, int]:
    """Nodules overlapped by a predicted 3D component, and components overlapping none."""
    components, count = ndimage.label(predicted, structure=np.ones((3, 3, 3), dtype=bool))
    truth = volume.lesion_labels
    found = {int(v) for v in np.unique(truth[components > 0]) if v > 0}
    touching = {int(v) for v in np.unique(components[truth > 0]) if v > 0}
    return len(found), int(count) - len(touching)


_TEST_THICKNESS_MM = (1.5, 2.5, 5.0, 2.0, 3.5, 5.0, 3.0, 1.5, 4.0, 2.5)


def evaluate_lesion_segmenter_3d(card: ModelCard, session: ort.InferenceSession) -> Results:
    rng = np.random.default_rng(_VOLUME_SEED)
    slices = 40
    calibration = np.random.default_rng(_CALIBRATION_SEED)
    prior = np.mean(
        [phantom_volume(calibration, slices, 512, 0).lung.mean(axis=0) for _ in range(3)], axis=0
    )
    average_lung = prior >= 0.5
    sums: dict[str, dict[str, list[float]]] = {s: {} for s in ("hu", "png", "baseline")}
    nodules = 0
    for thickness in _TEST_THICKNESS_MM:
        volume = phantom_volume(
            rng,
            slices,
            512,
            slice_thickness_mm=thickness,
            noise_hu=float(rng.uniform(8.0, 35.0)),
        )
        nodules += len(volume.lesions)
        truth_nodule = volume.lesion_labels > 0
        for source in ("hu", "png"):
            predicted = _volume_prediction(card, session, volume, source)
            found, false_positives = _nodule_hits(predicted[1], volume)
            for key, value in (
                ("dice_lung", dice(predicted[0], volume.lung)),
                ("dice_nodule", dice(predicted[1], truth_nodule)),
                ("nodules_found", float(found)),
                ("false_positives", float(false_positives)),
            ):
                sums[source].setdefault(key, []).append(value)
        baseline = sums["baseline"]
        baseline.setdefault("dice_lung", []).append(
            dice(np.broadcast_to(average_lung, volume.lung.shape), volume.lung)
        )
        baseline.setdefault("dice_nodule", []).append(dice(volume.lung, truth_nodule))
    held_out: dict[str, dict[str, float]] = {}
    for source, values in sums.items():
        held_out[source] = {
            key: float(np.mean(values[key]))
            for key in ("dice_lung", "dice_nodule")
            if key in values
        }
        if "nodules_found" in values:
            held_out[source]["nodule_sensitivity"] = (
                float(np.sum(values["nodules_found"])) / nodules
            )
            held_out[source]["false_positives_per_volume"] = float(
                np.mean(values["false_positives"])
            )
    description = (
        f"{len(_TEST_THICKNESS_MM)} held-out phantom volumes of {slices} slices of 512 x 512 "
        f"(own seed; slice thickness {', '.join(f'{t:g}' for t in _TEST_THICKNESS_MM)} mm; "
        f"{nodules} nodules of 5 to 30 mm), each slice resized to {card.size} x {card.size}, "
        "probabilities resized back and thresholded; Dice over each volume, averaged. "
        "Baselines: `lung`, a fixed average-lung mask on every slice; `nodule`, the whole lung "
        "called nodule (a map that knows where the lungs are but not the nodules)."
    )
    return {"held_out": held_out, "held_out_description": description}


EVALUATORS: Mapping[str, Callable[[ModelCard, ort.InferenceSession], Results]] = {
    "lesion_classifier": evaluate_lesion_classifier,
    "lesion_size_regressor": evaluate_lesion_size_regressor,
    "lesion_detector": evaluate_lesion_detector,
    "lung_segmenter": evaluate_lung_segmenter,
    "lesion_segmenter_3d": evaluate_lesion_segmenter_3d,
}
