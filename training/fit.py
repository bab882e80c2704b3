"""Training of the five example image models (PyTorch, CPU) and their export to ONNX.

Every model learns from dense targets drawn from the phantoms' ground truth (lesion masks,
centres, sizes) even when its served output is a single number: dense supervision makes tiny
networks converge in a few thousand steps on two cores. All randomness comes from the seed
given to each function.
"""

from __future__ import annotations

import inspect
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.cards import ModelCard
from training.datasets import LEFT_LUNG, LESION, RIGHT_LUNG, SliceSet, model_input
from training.nets import CenterNet, LesionClassifierNet, SizeRegressorNet, UNet
from training.phantoms import LARGE_NODULE_MM

__all__ = [
    "Trained",
    "export_onnx",
    "optimise",
    "train_lesion_classifier",
    "train_lesion_detector",
    "train_lesion_segmenter_3d",
    "train_lesion_size_regressor",
    "train_lung_segmenter",
]

log = logging.getLogger("training")

BATCH = 16
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
"""IR 8 with opset 17 loads in every ONNX Runtime from 1.14, so in any Triton 23.x/24.x image."""


@dataclass(frozen=True)
class Trained:
    net: nn.Module
    steps: int
    seconds: float


def optimise(net: nn.Module, steps: int, lr: float, loss_of_step: Callable[[], Tensor]) -> float:
    """AdamW under a one-cycle schedule for ``steps``; the seconds it took."""
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=steps, pct_start=0.1
    )
    start = time.perf_counter()
    running = 0.0
    for step in range(1, steps + 1):
        loss = loss_of_step()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        running += float(loss.detach())
        if step % 200 == 0 or step == steps:
            log.info("  step %d/%d  loss %.4f", step, steps, running / min(step, 200))
            running = 0.0 if step % 200 == 0 else running
    net.eval()
    return time.perf_counter() - start


def _cells_near_lesions(
    lesions: npt.NDArray[np.float32], grid: int, stride: int, min_diameter_mm: float = 0.0
) -> npt.NDArray[np.bool_]:
    """Grid cells whose ``stride``-pixel square touches a lesion (``row, col, radius, mm``)."""
    centres = (np.arange(grid, dtype=np.float32) + 0.5) * stride
    mask = np.zeros((grid, grid), dtype=bool)
    reach = stride / math.sqrt(2.0)
    for row, col, radius, diameter in lesions:
        if diameter >= min_diameter_mm:
            distance = np.hypot(centres[:, None] - row, centres[None, :] - col)
            mask |= distance <= radius + reach
    return mask


def _block_mean(mask: npt.NDArray[np.bool_], stride: int) -> npt.NDArray[np.float32]:
    """Fraction of each ``stride`` x ``stride`` block covered by ``mask`` (``(B, S, S)``)."""
    b, s, _ = mask.shape
    blocks = mask.reshape(b, s // stride, stride, s // stride, stride).astype(np.float32)
    result: npt.NDArray[np.float32] = blocks.mean(axis=(2, 4))
    return result


def _tensor(array: npt.ArrayLike) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def train_lesion_classifier(data: SliceSet, steps: int, seed: int) -> Trained:
    """Categories ``nodule`` and ``large_nodule``, from per-cell targets and the image label."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = LesionClassifierNet(categories=2)
    stride = 8
    grid = data.size // stride
    # Nodule cells are rare and small nodules touch few of them: weigh them up so that a 5 mm
    # nodule is not outvoted by the background.
    positive_weight = torch.full((2, 1, 1), 4.0)

    def loss_of_step() -> Tensor:
        index = rng.integers(0, data.hu.shape[0], BATCH)
        cells = np.zeros((BATCH, 2, grid, grid), dtype=bool)
        for k, i in enumerate(index):
            lesions = data.lesions_of(int(i))
            cells[k, 0] = _cells_near_lesions(lesions, grid, stride)
            cells[k, 1] = _cells_near_lesions(lesions, grid, stride, LARGE_NODULE_MM)
        target_maps = _tensor(cells)
        target_images = target_maps.amax(dim=(2, 3))
        logits = net.maps(_tensor(model_input(data.hu[index], rng)))
        dense = F.binary_cross_entropy_with_logits(logits, target_maps, pos_weight=positive_weight)
        pooled = F.binary_cross_entropy_with_logits(logits.amax(dim=(2, 3)), target_images)
        return dense + pooled

    seconds = optimise(net, steps, 3e-3, loss_of_step)
    return Trained(net, steps, seconds)


def train_lesion_size_regressor(data: SliceSet, steps: int, seed: int) -> Trained:
    """Coverage and diameter maps on the stride-4 grid.

    Every cell a nodule touches learns that nodule's diameter, weighted by how much of the cell
    it covers, which is also how the served value weighs the cells.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stride = SizeRegressorNet.stride
    cell_mm = data.spacing_mm * stride
    net = SizeRegressorNet(cell_area_mm2=cell_mm * cell_mm)
    grid = data.size // stride

    def loss_of_step() -> Tensor:
        index = rng.integers(0, data.hu.shape[0], BATCH)
        coverage = _block_mean((data.labels[index] & LESION) > 0, stride)
        diameters = np.zeros((BATCH, grid, grid), dtype=np.float32)
        for k, i in enumerate(index):
            for lesion in data.lesions_of(int(i)):
                near = _cells_near_lesions(lesion[None], grid, stride)
                diameters[k][near] = lesion[3] / SizeRegressorNet.diameter_scale_mm
        coverage_logits, diameter = net.maps(_tensor(model_input(data.hu[index], rng)))
        target_coverage = _tensor(coverage)
        weight = 1.0 + 4.0 * target_coverage
        diameter_loss = (weight * (diameter - _tensor(diameters)).abs()).mean()
        coverage_loss = F.binary_cross_entropy_with_logits(coverage_logits, target_coverage)
        return coverage_loss + diameter_loss

    seconds = optimise(net, steps, 3e-3, loss_of_step)
    return Trained(net, steps, seconds)


def _focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    probability = torch.sigmoid(logits).clamp(1e-4, 1.0 - 1e-4)
    centre = target >= 1.0
    positive = -torch.log(probability) * (1.0 - probability) ** 2
    negative = -torch.log(1.0 - probability) * probability**2 * (1.0 - target) ** 4
    loss = torch.where(centre, positive, negative).sum()
    return loss / centre.sum().clamp(min=1)


def train_lesion_detector(data: SliceSet, steps: int, seed: int, top_k: int) -> Trained:
    """Gaussian centre heatmap, log box size and offset at each lesion's centre cell."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = CenterNet(top_k=top_k)
    stride = CenterNet.stride
    grid = data.size // stride
    cells = np.arange(grid, dtype=np.float32)

    def loss_of_step() -> Tensor:
        index = rng.integers(0, data.hu.shape[0], BATCH)
        heat = np.zeros((BATCH, grid, grid), dtype=np.float32)
        size = np.zeros((BATCH, 2, grid, grid), dtype=np.float32)
        offset = np.zeros((BATCH, 2, grid, grid), dtype=np.float32)
        centre = np.zeros((BATCH, grid, grid), dtype=bool)
        for k, i in enumerate(index):
            for row, col, radius, _ in data.lesions_of(int(i)):
                cy, cx = row / stride, col / stride
                iy, ix = min(int(cy), grid - 1), min(int(cx), grid - 1)
                sigma = max(0.5, radius / stride / 3.0)
                bump = np.exp(
                    -((cells[:, None] - iy) ** 2 + (cells[None, :] - ix) ** 2) / (2 * sigma**2)
                )
                heat[k] = np.maximum(heat[k], bump)
                centre[k, iy, ix] = True
                size[k, :, iy, ix] = math.log(2.0 * radius)
                offset[k, :, iy, ix] = (cx - ix, cy - iy)
        heat_logits, log_size, predicted_offset = net.maps(
            _tensor(model_input(data.hu[index], rng))
        )
        mask = torch.from_numpy(centre).unsqueeze(1).expand(-1, 2, -1, -1)
        count = mask.sum().clamp(min=1)
        size_loss = ((log_size - _tensor(size)).abs() * mask).sum() / count
        offset_loss = ((predicted_offset - _tensor(offset)).abs() * mask).sum() / count
        return _focal_loss(heat_logits, _tensor(heat)) + size_loss + offset_loss

    seconds = optimise(net, steps, 3e-3, loss_of_step)
    return Trained(net, steps, seconds)


def _soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - Dice per channel over the batch, averaged over channels."""
    probability = torch.sigmoid(logits)
    overlap = (probability * target).sum(dim=(0, 2, 3))
    total = probability.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return (1.0 - (2.0 * overlap + 1.0) / (total + 1.0)).mean()


def train_lung_segmenter(data: SliceSet, steps: int, seed: int) -> Trained:
    """Channels ``left_lung``, ``right_lung`` (the patient's sides)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(encoder=(8, 16, 32, 32), decoder=(32, 16, 8), classes=2)

    def loss_of_step() -> Tensor:
        index = rng.integers(0, data.hu.shape[0], BATCH)
        labels = data.labels[index]
        target = _tensor(np.stack([(labels & LEFT_LUNG) > 0, (labels & RIGHT_LUNG) > 0], 1))
        logits = net.maps(_tensor(model_input(data.hu[index], rng)))
        return F.binary_cross_entropy_with_logits(logits, target) + _soft_dice_loss(logits, target)

    seconds = optimise(net, steps, 3e-3, loss_of_step)
    return Trained(net, steps, seconds)


def train_lesion_segmenter_3d(data: SliceSet, steps: int, seed: int, crop: int) -> Trained:
    """Channels ``lung``, ``nodule`` on ``crop``-pixel patches, two thirds centred near a nodule.

    The network is fully convolutional, so it is served on whole slices of the model size.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(encoder=(8, 16, 24, 32), decoder=(24, 8, 8), classes=2)
    size = data.size
    with_lesion = np.unique(data.lesions[:, 0].astype(np.int64))

    def loss_of_step() -> Tensor:
        hu = np.empty((BATCH, crop, crop), dtype=np.int16)
        labels = np.empty((BATCH, crop, crop), dtype=np.uint8)
        for k in range(BATCH):
            if rng.random() < 2 / 3 and with_lesion.size:
                i = int(with_lesion[rng.integers(with_lesion.size)])
                row, col = data.lesions_of(i)[rng.integers(len(data.lesions_of(i))), :2]
                top = int(np.clip(row - rng.uniform(0.15, 0.85) * crop, 0, size - crop))
                left = int(np.clip(col - rng.uniform(0.15, 0.85) * crop, 0, size - crop))
            else:
                i = int(rng.integers(data.hu.shape[0]))
                top, left = (int(v) for v in rng.integers(0, size - crop + 1, 2))
            hu[k] = data.hu[i, top : top + crop, left : left + crop]
            labels[k] = data.labels[i, top : top + crop, left : left + crop]
        lung = (labels & (LEFT_LUNG | RIGHT_LUNG)) > 0
        target = _tensor(np.stack([lung, (labels & LESION) > 0], 1))
        logits = net.maps(_tensor(model_input(hu, rng)))
        return F.binary_cross_entropy_with_logits(logits, target) + _soft_dice_loss(logits, target)

    seconds = optimise(net, steps, 3e-3, loss_of_step)
    return Trained(net, steps, seconds)


def export_onnx(net: nn.Module, card: ModelCard) -> bytes:
    """The ONNX file of ``net`` with a dynamic batch axis, checked against PyTorch."""
    example = torch.from_numpy(np.random.default_rng(0).random((2, 1, card.size, card.size)))
    return onnx_file(
        net,
        (example.float(),),
        [spec.name for spec in card.inputs],
        [output.name for output in card.outputs],
        f"{card.name}: {card.summary}",
    )


def onnx_file(
    net: nn.Module,
    examples: tuple[Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    doc: str,
) -> bytes:
    """``net`` exported with a dynamic batch axis on every input, at opset 17 and IR 8."""
    net.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    arguments = list(inspect.signature(net.forward).parameters)
    program = torch.onnx.export(
        net,
        examples,
        input_names=inputs,
        output_names=outputs,
        opset_version=ONNX_OPSET,
        dynamic_shapes={name: {0: batch} for name in arguments},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    model.ir_version = ONNX_IR_VERSION
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    buffer = io.BytesIO()
    onnx.save_model(model, buffer)
    return buffer.getvalue()
