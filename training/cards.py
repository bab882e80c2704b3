"""What each example model means to the gateway, and the files that say it.

A :class:`ModelCard` is the single source of a model folder's ``config.pbtxt`` (tensors,
batching, and the ``aicoco.*`` parameters the gateway reads over gRPC) and of its README.
numpy-free and torch-free, so tests can compare the committed files with the cards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from training.phantoms import FIELD_OF_VIEW_MM, LARGE_NODULE_MM, LUNG_WINDOW

__all__ = [
    "CARDS",
    "MetricRow",
    "ModelCard",
    "TensorSpec",
    "parameter_texts",
    "render_config",
    "render_readme",
]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class MetricRow:
    """One line of a README's accuracy table: ``key`` in the held-out results."""

    label: str
    key: str
    digits: int = 3


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: str
    summary: str
    size: int
    dims: int
    max_batch_size: int
    outputs: tuple[TensorSpec, ...]
    output: Mapping[str, Any]
    description: str
    metrics: tuple[MetricRow, ...]
    categories: tuple[Mapping[str, Any], ...] = ()
    regressions: tuple[Mapping[str, Any], ...] = ()
    queue_delay_us: int = 0
    """Triton's dynamic-batching delay. Zero: requests that queue while the instance is busy are
    still batched, and none is held back waiting for others. Measured with the gateway bench on
    2 CPU cores, 2000 us against 0 cost 4 to 5 ms of p50 at concurrency 1, 18 % of throughput
    at concurrency 8 and 2 ms of Triton CPU per request; 100 us was no better."""

    card_file: ClassVar[str] = "training/cards.py"

    @property
    def input(self) -> TensorSpec:
        return TensorSpec("image", "TYPE_FP32", (1, self.size, self.size))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self.input,)

    def parameters(self) -> dict[str, str]:
        """The ``aicoco.*`` parameters, each a JSON string as the gateway parses it."""
        preprocessing = {
            "size": [self.size, self.size],
            "window": list(LUNG_WINDOW),
            "scale": "dtype",
            "dims": self.dims,
        }
        values: dict[str, Any] = {"aicoco.task": self.task}
        if self.categories:
            values["aicoco.categories"] = [dict(c) for c in self.categories]
        if self.regressions:
            values["aicoco.regressions"] = [dict(r) for r in self.regressions]
        values["aicoco.input"] = preprocessing
        values["aicoco.output"] = dict(self.output)
        return parameter_texts(values)


def parameter_texts(values: Mapping[str, Any]) -> dict[str, str]:
    """Each parameter as its ``string_value``: JSON, but a plain string (the task) as it is."""
    return {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()
    }


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(tensors: tuple[TensorSpec, ...]) -> str:
    entries = [
        f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: {_dims(t.dims)}\n  }}'
        for t in tensors
    ]
    return "[\n" + ",\n".join(entries) + "\n]"


class Configured(Protocol):
    """What a ``config.pbtxt`` is written from: an image card or a table card."""

    card_file: ClassVar[str]

    @property
    def name(self) -> str: ...

    @property
    def max_batch_size(self) -> int: ...

    @property
    def queue_delay_us(self) -> int: ...

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def parameters(self) -> dict[str, str]: ...


def render_config(card: Configured) -> str:
    """``config.pbtxt`` text. JSON values are single-quoted so they need no escaping."""
    parameters = []
    for key, value in card.parameters().items():
        if "'" in value or "\\" in value:
            raise ValueError(f"parameter {key} must not contain quotes or backslashes: {value}")
        parameters.append(
            f"  {{\n    key: \"{key}\"\n    value: {{ string_value: '{value}' }}\n  }}"
        )
    return (
        f"# Written by `python -m training` from {card.card_file}: edit the card, not this file.\n"
        f'name: "{card.name}"\n'
        f'backend: "onnxruntime"\n'
        f"max_batch_size: {card.max_batch_size}\n"
        f"input {_tensor_block(card.inputs)}\n"
        f"output {_tensor_block(card.outputs)}\n"
        "# One instance; its kind (GPU when there is one, else CPU) is left to Triton.\n"
        "instance_group [ { count: 1 } ]\n"
        "# Requests that wait while the instance is busy run as one batch; none is held back.\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {card.queue_delay_us}\n}}\n"
        "parameters [\n" + ",\n".join(parameters) + "\n]\n"
    )


_WINDOW = f"{LUNG_WINDOW[0]:g}/{LUNG_WINDOW[1]:g}"
_PREPROCESSING = """\
Each slice is resized to {size} x {size} (bilinear). CT in Hounsfield units (DICOM with a
rescale, NIfTI) goes through the lung window {window} (centre/width: clip to
[{low:g}, {high:g}] HU, map to [0, 1]). An 8-bit image (PNG/JPEG) is divided by 255: it should
be a lung-window rendering of a CT slice (training covered exact and slightly different
windows, and 8-bit quantisation). The phantoms have a {fov:g} mm field of view (0.7 mm pixels
at 512 x 512): millimetre figures assume that, as in an ordinary chest CT reconstruction."""


def _category_table(card: ModelCard) -> str:
    rows = []
    for channel, spec in enumerate(card.categories or card.regressions):
        extras = ", ".join(f"{k}: {_shown(v)}" for k, v in spec.items() if k != "name")
        rows.append(f"| {channel} | `{spec['name']}` | {extras} |")
    head = "| channel | name | declared with |\n|---|---|---|\n"
    return head + "\n".join(rows)


def _shown(value: Any) -> str:
    """A declared value for the README: a code as ``SCT 27925004 (Nodule)``."""
    if isinstance(value, Mapping) and {"value", "scheme", "meaning"} <= set(value):
        return f"{value['scheme']} {value['value']} ({value['meaning']})"
    return str(value)


def _metric_table(card: ModelCard, record: Mapping[str, Any]) -> str:
    held_out = record["held_out"]
    lines = [
        "| metric | windowed HU | 8-bit PNG | chance baseline |",
        "|---|---|---|---|",
    ]
    for row in card.metrics:
        values = [
            f"{held_out[source][row.key]:.{row.digits}f}" if row.key in held_out[source] else "-"
            for source in ("hu", "png", "baseline")
        ]
        lines.append(f"| {row.label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def readme_tail(card: Configured, training: Mapping[str, Any], unit: str) -> str:
    """The end of every model README: the network, the parameters, how to retrain it."""
    parameters = "\n".join(
        f"parameters {{ key: \"{k}\" value: {{ string_value: '{v}' }} }}"
        for k, v in card.parameters().items()
    )
    return f"""## Model

{training["parameters"]:,} parameters, ONNX opset 17, {training["onnx_bytes"] / 1024:.0f} KiB.
Trained for {training["steps"]} steps of {training["batch"]} {unit}
({training["seconds"]:.0f} s on two CPU cores), seed {training["seed"]}.

## Parameters read by the gateway

```
{parameters}
```

See `model_repository/README.md` for their meaning.

## Retrain

```
make models                                   # every example model, PyTorch on CPU
.venv-train/bin/python -m training {card.name}
```
"""


def render_readme(card: ModelCard, record: Mapping[str, Any]) -> str:
    """The model folder's README, with the held-out results of ``record`` (metrics.json)."""
    training = record["training"]
    outputs = "\n".join(f"- `{t.name}` FP32 {_dims(t.dims)} (+ batch)" for t in card.outputs)
    low, high = LUNG_WINDOW[0] - LUNG_WINDOW[1] / 2, LUNG_WINDOW[0] + LUNG_WINDOW[1] / 2
    preprocessing = _PREPROCESSING.format(
        size=card.size, window=_WINDOW, low=low, high=high, fov=FIELD_OF_VIEW_MM
    )
    return f"""# {card.name}

{card.summary} Task: **{card.task}**{" (3D, applied slice by slice)" if card.dims == 3 else ""}.
An example model trained on synthetic CT phantoms (`training/phantoms.py`): it shows how a model
is served through the gateway. It is not a medical device and has never seen a patient.

## Input

`image` FP32 [1, {card.size}, {card.size}] + the batch dimension
(up to {card.max_batch_size} slices per call, dynamic batching).

{preprocessing}

## Output

{outputs}

{_category_table(card)}

{card.description}

## Accuracy on held-out phantoms

{record["held_out_description"]}

{_metric_table(card, record)}

"windowed HU": the phantom in Hounsfield units through the lung window, as the gateway feeds a
CT. "8-bit PNG": the same slices rendered to 8 bits with the lung window and divided by 255, as
the gateway feeds a PNG.

{readme_tail(card, training, "slices")}
Training is seeded: the same code gives the same phantoms and nearly the same weights
(PyTorch's CPU kernels are not bit-reproducible across machines).
"""


_NODULE_COLOR = "#E8432E"
_LUNG_COLOR = "#4A90E2"


def _sct(value: str, meaning: str) -> dict[str, str]:
    return {"value": value, "scheme": "SCT", "meaning": meaning}


# SNOMED CT codes (PS3.16 CID 7150 segmentation property categories, CID 7151/7166 types, the
# findings of TID 1500): a PACS shows "Lung" and "Nodule" instead of the gateway's private codes.
_ANATOMY = _sct("91723000", "Anatomical Structure")
_ALTERED = _sct("49755003", "Morphologically Altered Structure")
_NODULE = _sct("27925004", "Nodule")
_NODULE_CODES = {"finding_type": _NODULE}
_NODULE_SEGMENT = {
    "segmented_property_category": _ALTERED,
    "segmented_property_type": _NODULE,
    "finding_type": _NODULE,
}

LESION_CLASSIFIER = ModelCard(
    name="lesion_classifier",
    task="classification",
    summary="Does an axial chest CT slice show a lung nodule, and one of 10 mm or more?",
    size=256,
    dims=2,
    max_batch_size=8,
    outputs=(TensorSpec("probabilities", "TYPE_FP32", (2,)),),
    categories=(
        {"name": "nodule", "color": _NODULE_COLOR, **_NODULE_CODES},
        {"name": "large_nodule", "color": "#F5A623"},
    ),
    output={"threshold": 0.5},
    description=f"""\
`probabilities` are independent sigmoids (multi-label): `nodule` = at least one nodule in the
slice, `large_nodule` = at least one nodule of {LARGE_NODULE_MM:g} mm diameter or more. The
gateway marks a category present when its probability is at least `threshold`.

How it works: six 3 x 3 convolutions give two logits per 8 x 8-pixel cell; the image logit
is their maximum. Training supervises the cells (cells touching a nodule) and the image.""",
    metrics=(
        MetricRow("ROC AUC `nodule`", "auc_nodule"),
        MetricRow("ROC AUC `large_nodule`", "auc_large_nodule"),
        MetricRow("accuracy `nodule` at 0.5", "accuracy_nodule"),
        MetricRow("accuracy `large_nodule` at 0.5", "accuracy_large_nodule"),
        MetricRow("sensitivity `nodule` when all nodules are < 8 mm", "sensitivity_small_nodule"),
    ),
)

LESION_SIZE_REGRESSOR = ModelCard(
    name="lesion_size_regressor",
    task="regression",
    summary="How large is the largest lung nodule of an axial chest CT slice, and how much "
    "nodule area does the slice hold?",
    size=256,
    dims=2,
    max_batch_size=8,
    outputs=(TensorSpec("values", "TYPE_FP32", (2,)),),
    regressions=(
        {"name": "largest_nodule_diameter", "unit": "mm"},
        {"name": "total_nodule_area", "unit": "mm^2"},
    ),
    output={},
    description="""\
`values` = [diameter of the largest nodule in the slice (mm), total cross-section area of the
nodules in the slice (mm^2)]; both are 0 for a slice without nodule. Millimetres assume the
phantoms' 0.7 mm pixels at 512 x 512 (1.4 mm at the model's 256): for other pixel spacings,
scale by the ratio (`"scale"` in `aicoco.output` does this for a fixed ratio).

How it works: five convolutions give two maps on a 4-pixel grid: the fraction of each cell
covered by nodule, and the diameter of the nodule at that cell. The graph returns the largest
coverage-weighted 3 x 3 mean of the diameter map, and the covered area (coverage below 0.05
counts as none).""",
    metrics=(
        MetricRow("MAE largest diameter, all slices (mm)", "mae_diameter_mm", 2),
        MetricRow("MAE largest diameter, slices with nodules (mm)", "mae_diameter_nodule_mm", 2),
        MetricRow(
            "mean error largest diameter, slices with nodules (mm)", "bias_diameter_nodule_mm", 2
        ),
        MetricRow("MAE total area, all slices (mm^2)", "mae_area_mm2", 1),
        MetricRow("MAE total area, slices with nodules (mm^2)", "mae_area_nodule_mm2", 1),
    ),
)

LESION_DETECTOR = ModelCard(
    name="lesion_detector",
    task="detection",
    summary="Finds lung nodules in an axial chest CT slice and draws their boxes.",
    size=256,
    dims=2,
    max_batch_size=8,
    outputs=(
        TensorSpec("boxes", "TYPE_FP32", (16, 4)),
        TensorSpec("scores", "TYPE_FP32", (16, 1)),
    ),
    categories=({"name": "nodule", "color": _NODULE_COLOR, **_NODULE_CODES},),
    output={"score_threshold": 0.3, "iou_threshold": 0.5},
    description="""\
`boxes`: 16 candidate boxes `[x1, y1, x2, y2]` in model-input pixels (0..256, pixel `i`
spans `[i, i + 1)`); `scores`: their nodule score. Candidates are sorted by score; most are
near 0. The gateway keeps those with a score of at least `score_threshold`, applies NMS at
`iou_threshold` and scales the boxes to the original image.

How it works: a CenterNet-style network (stride 4) predicts a nodule-centre heatmap, box size
and sub-cell offset; the graph keeps local maxima of the heatmap (3 x 3) and decodes the 16
best (ONNX TopK).""",
    metrics=(
        MetricRow("AP at IoU 0.5", "ap50"),
        MetricRow("recall at the configured threshold, IoU 0.5", "recall"),
        MetricRow("precision at the configured threshold, IoU 0.5", "precision"),
        MetricRow("mean IoU of matched nodules", "mean_iou"),
    ),
)

LUNG_SEGMENTER = ModelCard(
    name="lung_segmenter",
    task="segmentation",
    summary="Segments the left and right lung in an axial chest CT slice.",
    size=128,
    dims=2,
    max_batch_size=16,
    outputs=(TensorSpec("probabilities", "TYPE_FP32", (2, 128, 128)),),
    categories=(
        {
            "name": "left_lung",
            "supercategory_name": "lung",
            "color": _LUNG_COLOR,
            "segmented_property_category": _ANATOMY,
            "segmented_property_type": _sct("44029006", "Left lung"),
        },
        {
            "name": "right_lung",
            "supercategory_name": "lung",
            "color": "#50E3C2",
            "segmented_property_category": _ANATOMY,
            "segmented_property_type": _sct("3341006", "Right lung"),
        },
    ),
    output={"threshold": 0.5, "instances": False},
    description="""\
`probabilities`: per-pixel sigmoid of each class; the gateway resizes them to the original
image (bilinear) and keeps pixels at or above `threshold`. Left and right are the patient's:
`left_lung` is on the image's right (radiological convention). Nodules inside a lung belong
to it. Both classes have the supercategory `lung`, which AiCOCO lists as a third category.

How it works: a small U-Net (three levels, dilated bottleneck).""",
    metrics=(
        MetricRow("Dice `left_lung` (at 512 x 512)", "dice_left_lung"),
        MetricRow("Dice `right_lung` (at 512 x 512)", "dice_right_lung"),
    ),
)

LESION_SEGMENTER_3D = ModelCard(
    name="lesion_segmenter_3d",
    task="segmentation",
    summary="Segments the lungs and each lung nodule in a chest CT volume.",
    size=256,
    dims=3,
    max_batch_size=16,
    outputs=(TensorSpec("probabilities", "TYPE_FP32", (2, 256, 256)),),
    categories=(
        {
            "name": "lung",
            "color": _LUNG_COLOR,
            "segmented_property_category": _ANATOMY,
            "segmented_property_type": _sct("39607008", "Lung"),
        },
        {"name": "nodule", "color": _NODULE_COLOR, **_NODULE_SEGMENT},
    ),
    output={"threshold": 0.5, "instances": True},
    description="""\
Applied slice by slice: the gateway sends the volume's slices in batches of up to 16 and
stacks the results into `(C, Z, H, W)`. A 512 x 512 CT is resized to 256 x 256 and the
probabilities back to 512 x 512 (bilinear), then thresholded. `instances: true`: each 3D
connected component of a class becomes one AiCOCO object, so every nodule is its own object
with one annotation per slice it appears on (and each lung is one object).

How it works: a small U-Net (three levels, dilated bottleneck), trained on 128 x 128 patches
of phantom volume slices (slice thickness 1.5 to 6 mm), served on whole slices.""",
    metrics=(
        MetricRow("Dice `lung` per volume (at 512 x 512)", "dice_lung"),
        MetricRow("Dice `nodule` per volume (at 512 x 512)", "dice_nodule"),
        MetricRow("nodules found (3D component overlaps it)", "nodule_sensitivity"),
        MetricRow("false-positive nodule components per volume", "false_positives_per_volume", 2),
    ),
)

CARDS: dict[str, ModelCard] = {
    card.name: card
    for card in (
        LESION_CLASSIFIER,
        LESION_SIZE_REGRESSOR,
        LESION_DETECTOR,
        LUNG_SEGMENTER,
        LESION_SEGMENTER_3D,
    )
}
