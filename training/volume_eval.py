"""The volumetric example model measured as the gateway serves it, on held-out phantoms.

Each held-out phantom is rendered at its own resolution (thin slices, 0.7 or 1.4 mm pixels),
then segmented by the gateway's own volumetric steps (:mod:`gateway.volumes`: resampling to the
model's grid, the window, the sliding window's patches and blend, back onto the series' grid)
with the network run by ONNX Runtime, and compared with the phantom's truth there. numpy,
scipy and ONNX Runtime only: ``--evaluate-only`` runs it without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from scipy import ndimage

from gateway.volumes import intensity
from gateway.volumes.activation import activate
from gateway.volumes.grid import Resampling
from gateway.volumes.windows import Accumulator, Plan
from training.metrics import dice
from training.phantoms import LUNG_WINDOW, PhantomVolume, phantom_volume
from training.volume_cards import VolumeCard

SEED = 41
HELD_OUT = ((160, 256, 1.25), (120, 512, 2.5), (200, 256, 1.0))
"""``(slices, size, slice thickness mm)`` of each held-out phantom."""


def segment(
    card: VolumeCard,
    session: ort.InferenceSession,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
) -> npt.NDArray[np.uint8]:
    """Labels (0 background, 1.. the categories) on the series' grid, as the gateway finds
    them with the card's parameters."""
    window = card.window
    shape = (hu.shape[0], hu.shape[1], hu.shape[2])
    forward = Resampling.to_spacing(shape, spacing, card.spacing)
    volume = forward.apply(hu, then=intensity.window(*LUNG_WINDOW))
    overlap = float(window["overlap"])
    plan = Plan.of(forward.shape_out, card.roi, (overlap,) * 3, window["blend"], 0.125)
    padded = plan.pad(volume, "constant", 0.0)
    accumulator = Accumulator(plan, card.channels)
    for first in range(0, len(plan.starts), card.max_batch_size):
        starts = plan.starts[first : first + card.max_batch_size]
        (logits,) = session.run(["logits"], {"image": plan.patches(padded, starts)})
        for start, answer in zip(starts, logits, strict=True):
            accumulator.add(start, answer)
    blended = accumulator.result()
    activate(blended, "softmax")
    labels = np.empty(shape, dtype=np.uint8)
    for first_slice, block in forward.inverse(spacing, card.spacing).blocks(blended):
        labels[first_slice : first_slice + block.shape[1]] = block.argmax(axis=0)
    return labels


def _found(predicted: npt.NDArray[np.bool_], volume: PhantomVolume) -> int:
    components, _ = ndimage.label(predicted, structure=np.ones((3, 3, 3), dtype=bool))
    return len({int(v) for v in np.unique(volume.lesion_labels[components > 0]) if v > 0})


def evaluate(card: VolumeCard, session: ort.InferenceSession) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    scores: dict[str, list[float]] = {"dice_lung": [], "dice_nodule": []}
    found = nodules = 0
    for slices, size, thickness in HELD_OUT:
        volume = phantom_volume(rng, slices, size, slice_thickness_mm=thickness)
        labels = segment(card, session, volume.hu, volume.spacing_mm)
        nodule = volume.lesion_labels > 0
        scores["dice_lung"].append(dice(labels == 1, volume.lung & ~nodule))
        scores["dice_nodule"].append(dice(labels == 2, nodule))
        found += _found(labels == 2, volume)
        nodules += len(volume.lesions)
    held_out = {key: float(np.mean(values)) for key, values in scores.items()}
    held_out["nodule_sensitivity"] = found / nodules
    shapes = ", ".join(f"{s} x {n} x {n} at {t:g} mm" for s, n, t in HELD_OUT)
    description = (
        f"{len(HELD_OUT)} held-out phantom volumes (own seed; {shapes}; {nodules} nodules of 5 "
        "to 30 mm), segmented with the gateway's volumetric steps and the card's parameters; "
        "Dice on the series' own grid, averaged over the volumes."
    )
    return {"held_out": held_out, "held_out_description": description}
