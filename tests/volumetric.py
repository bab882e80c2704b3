"""A volumetric model and series the tests make, and MONAI's pipeline as the oracle.

The model is a small 3D convolutional network in ONNX with fixed random weights (two 3 x 3 x 3
convolutions with zero padding, so a voxel's answer depends on where it sits in its patch and
the blend matters), whose logits follow the CT's intensity bands: background, soft tissue,
bright structures. The oracle runs the same ONNX file with ONNX Runtime inside MONAI's
``Spacing``, intensity transform, ``sliding_window_inference``, activation and
``SpatialResample`` back, as a user's training code would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from training.cards import parameter_texts

OPSET = 17
HIDDEN = 4
CATEGORIES = [
    {"name": "tissue", "supercategory_name": "body"},
    {"name": "dense", "supercategory_name": "body"},
]


@dataclass(frozen=True)
class VolumeModel:
    """What a test varies: the patch, the grid, the window's arguments, the output."""

    roi: tuple[int, int, int] = (8, 24, 24)
    spacing: tuple[float, float, float] | None = (2.0, 1.5, 1.5)
    intensity: Mapping[str, Any] = field(
        default_factory=lambda: {"kind": "range", "a_min": -175, "a_max": 250, "clip": True}
    )
    overlap: float = 0.5
    blend: str = "gaussian"
    batch: int = 4
    max_batch_size: int = 8
    mirror_axes: tuple[int, ...] = ()
    activation: str = "softmax"
    decision: str = "argmax"
    padding: str = "constant"
    seed: int = 0

    @property
    def channels(self) -> int:
        return len(CATEGORIES) + (1 if self.decision == "argmax" else 0)

    @property
    def output(self) -> str:
        return "probabilities" if self.activation == "none" else "logits"

    def parameters(self) -> dict[str, Any]:
        window: dict[str, Any] = {
            "roi": list(self.roi),
            "overlap": self.overlap,
            "blend": self.blend,
            "batch": self.batch,
            "padding": self.padding,
            "mirror_axes": list(self.mirror_axes),
        }
        volume_input: dict[str, Any] = {"intensity": dict(self.intensity)}
        if self.spacing is not None:
            volume_input["spacing"] = list(self.spacing)
        return {
            "aicoco.task": "volumetric_segmentation",
            "aicoco.categories": CATEGORIES,
            "aicoco.input": volume_input,
            "aicoco.sliding_window": window,
            "aicoco.output": {"activation": self.activation, "decision": self.decision},
        }

    def parameter_texts(self) -> dict[str, str]:
        """Each parameter's ``string_value``: JSON, the task's name as it is."""
        return parameter_texts(self.parameters())

    def config(self, name: str) -> str:
        dims = ", ".join(map(str, self.roi))
        entries = ",\n".join(
            f"  {{ key: \"{key}\" value: {{ string_value: '{text}' }} }}"
            for key, text in self.parameter_texts().items()
        )
        return (
            f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {self.max_batch_size}\n'
            f'input [ {{ name: "image" data_type: TYPE_FP32 dims: [ 1, {dims} ] }} ]\n'
            f'output [ {{ name: "{self.output}" data_type: TYPE_FP32 '
            f"dims: [ {self.channels}, {dims} ] }} ]\n"
            "instance_group [ { count: 1 } ]\n"
            "dynamic_batching { max_queue_delay_microseconds: 0 }\n"
            f"parameters [\n{entries}\n]\n"
        )

    def onnx(self) -> onnx.ModelProto:
        rng = np.random.default_rng(self.seed)
        smooth = np.full((HIDDEN, 1, 3, 3, 3), 1 / 27, dtype=np.float32)
        first = smooth + rng.normal(0, 0.05, smooth.shape).astype(np.float32)
        first_bias = np.array([0.0, -0.3, -0.6, 0.2], dtype=np.float32)[:HIDDEN]
        second = rng.normal(0, 0.02, (self.channels, HIDDEN, 3, 3, 3)).astype(np.float32)
        second_bias = np.zeros(self.channels, dtype=np.float32)
        # Centre taps: hidden unit k is relu(x - (0, 0.3, 0.6, -0.2)[k]) of the mapped CT, so
        # background wins below about 0.25, tissue up to about 0.7, dense above.
        roles = (["background"] if self.decision == "argmax" else []) + ["tissue", "dense"]
        taps = {
            "background": ({0: -8.0}, 2.0),
            "tissue": ({0: 4.0, 2: -10.0}, -1.0),
            "dense": ({2: 10.0}, -1.5),
        }
        for channel, role in enumerate(roles):
            weights, bias = taps[role]
            for unit, weight in weights.items():
                second[channel, unit, 1, 1, 1] += weight
            second_bias[channel] = bias
        nodes = [
            helper.make_node("Conv", ["image", "w1", "b1"], ["h"], pads=[1] * 6),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Conv", ["r", "w2", "b2"], ["z"], pads=[1] * 6),
        ]
        if self.activation == "none":
            nodes.append(helper.make_node("Softmax", ["z"], [self.output], axis=1))
        else:
            nodes.append(helper.make_node("Identity", ["z"], [self.output]))
        shape: list[int | str] = ["N", 1, *self.roi]
        graph = helper.make_graph(
            nodes,
            "volume",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
            [
                helper.make_tensor_value_info(
                    self.output, TensorProto.FLOAT, ["N", self.channels, *self.roi]
                )
            ],
            [
                helper.make_tensor("w1", TensorProto.FLOAT, first.shape, first.ravel()),
                helper.make_tensor("b1", TensorProto.FLOAT, [HIDDEN], first_bias),
                helper.make_tensor("w2", TensorProto.FLOAT, second.shape, second.ravel()),
                helper.make_tensor("b2", TensorProto.FLOAT, [self.channels], second_bias),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    def write(self, repository: Path, name: str) -> Path:
        folder = repository / name
        (folder / "1").mkdir(parents=True)
        onnx.save(self.onnx(), str(folder / "1" / "model.onnx"))
        (folder / "config.pbtxt").write_text(self.config(name))
        return folder


def phantom_ct(shape: tuple[int, int, int], seed: int = 0) -> npt.NDArray[np.int16]:
    """HU ``(Z, Y, X)``: air around an elliptic body of soft tissue, two bright spheres and a
    dark one far apart, noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(y / 0.8) ** 2 + (x / 0.9) ** 2 <= 1] = 40.0
    for (cz, cy, cx), radius, value in (
        ((-0.4, -0.3, -0.4), 0.3, 220.0),
        ((0.5, 0.35, 0.45), 0.25, 180.0),
        ((0.0, 0.3, -0.3), 0.35, -600.0),
    ):
        hu[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = value
    hu += rng.normal(0, 25, shape)
    return np.round(hu).astype(np.int16)


def ort_predictor(model: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        answer: np.ndarray = session.run([output], {"image": batch.astype(np.float32)})[0]
        return answer

    return run


@dataclass
class Oracle:
    probabilities: npt.NDArray[np.float32]
    """``(C, z, y, x)`` on the model's grid, after the activation."""
    labels: npt.NDArray[np.bool_]
    """``(categories, Z, Y, X)`` masks on the series' grid."""


def monai_pipeline(
    model: VolumeModel, hu: np.ndarray, spacing: Sequence[float], network: onnx.ModelProto
) -> Oracle:
    """The model's parameters as a MONAI user writes them, on the same ONNX network."""
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        NormalizeIntensity,
        ScaleIntensityRange,
        Spacing,
        SpatialResample,
    )

    predict = ort_predictor(network)
    affine = torch.from_numpy(np.diag([*map(float, spacing), 1.0]))
    image: Any = MetaTensor(torch.from_numpy(hu.astype(np.float32))[None], affine=affine)
    if model.spacing is not None:
        image = Spacing(pixdim=model.spacing, mode="bilinear")(image)
    kind = model.intensity["kind"]
    if kind == "range":
        i = model.intensity
        image = ScaleIntensityRange(
            i["a_min"], i["a_max"], i.get("b_min", 0.0), i.get("b_max", 1.0), clip=i["clip"]
        )(image)
    elif kind == "volume_zscore":
        image = NormalizeIntensity()(image)
    elif kind == "zscore":
        i = model.intensity
        image = (torch.clamp(image, *i["clip"]) - i["mean"]) / i["std"]
    flips = [
        c
        for size in range(len(model.mirror_axes) + 1)
        for c in itertools.combinations(model.mirror_axes, size)
    ]

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        total = None
        for flip in flips:
            dims = [2 + axis for axis in flip]
            flipped = torch.flip(batch, dims) if dims else batch
            answer = torch.from_numpy(predict(flipped.numpy()))
            answer = torch.flip(answer, dims) if dims else answer
            total = answer if total is None else total + answer
        assert total is not None
        return total / len(flips)

    with torch.no_grad():
        out = sliding_window_inference(
            image.as_tensor()[None],
            model.roi,
            model.batch,
            predictor,
            overlap=model.overlap,
            mode=model.blend,
            padding_mode=model.padding,
        )[0]
    if model.activation == "softmax":
        out = torch.softmax(out, dim=0)
    elif model.activation == "sigmoid":
        out = torch.sigmoid(out)
    probabilities = out.numpy().copy()
    on_grid: Any = MetaTensor(out, affine=image.affine)
    if model.spacing is not None:
        on_grid = SpatialResample(mode="bilinear")(
            on_grid, dst_affine=affine, spatial_size=hu.shape
        )
    values = on_grid.as_tensor().numpy()
    if model.decision == "argmax":
        winner = values.argmax(axis=0)
        labels = np.stack([winner == c for c in range(1, values.shape[0])])
    else:
        labels = values >= 0.5
    return Oracle(probabilities, labels)
