"""The volumetric example model: what it means to the gateway, and its files.

As :mod:`training.cards` is for the 2D image models, a :class:`VolumeCard` is the one source of
its folder's ``config.pbtxt`` and README; numpy-free and torch-free, so the tests compare the
committed files with the card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from training.cards import (
    LESION_SEGMENTER_3D,
    MetricRow,
    TensorSpec,
    parameter_texts,
    readme_tail,
)
from training.phantoms import FIELD_OF_VIEW_MM, LUNG_WINDOW

__all__ = ["VOLUME_CARDS", "VolumeCard", "render_volume_readme"]


@dataclass(frozen=True)
class VolumeCard:
    name: str
    summary: str
    spacing: tuple[float, float, float]
    """``(z, y, x)`` mm: the grid the network works on."""
    roi: tuple[int, int, int]
    categories: tuple[Mapping[str, Any], ...]
    window: Mapping[str, Any]
    """``aicoco.sliding_window`` beyond the ROI."""
    description: str
    metrics: tuple[MetricRow, ...]
    max_batch_size: int = 4
    queue_delay_us: int = 0
    seed: int = 31
    steps: int = 700
    task: ClassVar[str] = "volumetric_segmentation"
    card_file: ClassVar[str] = "training/volume_cards.py"

    @property
    def channels(self) -> int:
        """Background, then one channel per category (``argmax``)."""
        return 1 + len(self.categories)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("image", "TYPE_FP32", (1, *self.roi)),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("logits", "TYPE_FP32", (self.channels, *self.roi)),)

    def parameters(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "aicoco.task": self.task,
            "aicoco.categories": [dict(c) for c in self.categories],
            "aicoco.input": {
                "spacing": list(self.spacing),
                "intensity": {"kind": "window", "window": list(LUNG_WINDOW)},
            },
            "aicoco.sliding_window": {"roi": list(self.roi), **self.window},
            "aicoco.output": {"activation": "softmax", "decision": "argmax", "instances": True},
        }
        return parameter_texts(values)


def render_volume_readme(card: VolumeCard, record: Mapping[str, Any]) -> str:
    rows = "\n".join(
        f"| {row.label} | {record['held_out'][row.key]:.{row.digits}f} |" for row in card.metrics
    )
    z, y, x = card.roi
    names = ", ".join(f"`{c['name']}`" for c in card.categories)
    return f"""# {card.name}

{card.summary} Task: **{card.task}**. An example model trained on synthetic
chest CT phantoms: it shows how a patch-based 3D network is served through the gateway with no
code. It is not a medical device, nor advice on patients.

## Input and output

- `image` FP32 [1, {z}, {y}, {x}] (+ the batch: up to {card.max_batch_size} patches per call,
  dynamic batching): one `(z, y, x)` patch of the CT resampled to {_mm(card.spacing)} and mapped
  through the lung window {LUNG_WINDOW[0]}/{LUNG_WINDOW[1]} to 0..1.
- `logits` FP32 [{card.channels}, {z}, {y}, {x}]: background, then {names}; mutually exclusive
  (softmax, argmax).

{card.description}

## Accuracy on held-out phantoms

{record["held_out_description"]}

| measure | value |
|---|---|
{rows}

{readme_tail(card, record["training"], "patches")}"""


def _mm(spacing: tuple[float, float, float]) -> str:
    return " x ".join(f"{value:g}" for value in spacing) + " mm"


_LUNG, _NODULE = LESION_SEGMENTER_3D.categories

CHEST_SEGMENTER_3D = VolumeCard(
    name="chest_segmenter_3d",
    summary="Segments the lungs and their nodules in a chest CT, in 3D patches.",
    spacing=(2.5, 2.0, 2.0),
    roi=(32, 64, 64),
    categories=(_LUNG, _NODULE),
    window={"overlap": 0.5, "blend": "gaussian", "batch": 4},
    description=f"""\
Served zero-code as `volumetric_segmentation`: the gateway resamples the series to the
network's grid (a 1 mm CT is 2.5 times coarser there along z, 0.7 mm pixels about 3 times
coarser in plane), covers it with {32} x {64} x {64} patches at half overlap with Gaussian
blending (MONAI's `sliding_window_inference`), takes the softmax, brings the probabilities back
onto the series' slices and takes the argmax there. A nodule's voxels are `nodule`, not `lung`.
`instances: true`: each 3D connected component of a class is one AiCOCO object (each lung, each
nodule). A 300 x 512 x 512 series of 1 mm slices is a 121 x 180 x 180 grid, 175
patches. The phantoms have a {FIELD_OF_VIEW_MM:g} mm field of view.

How it works: a small 3D U-Net (two down-sampling levels), fully convolutional, trained on
random 16 x 48 x 48 crops of phantom volumes rendered on its grid (half of them around a
nodule), lung window, nodules of 5 to 30 mm; served on the larger patch.""",
    metrics=(
        MetricRow("Dice `lung` per volume (on the series' grid)", "dice_lung"),
        MetricRow("Dice `nodule` per volume (on the series' grid)", "dice_nodule"),
        MetricRow("nodules found (a predicted component overlaps it)", "nodule_sensitivity"),
    ),
)

VOLUME_CARDS: dict[str, VolumeCard] = {CHEST_SEGMENTER_3D.name: CHEST_SEGMENTER_3D}
