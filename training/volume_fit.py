"""Training of the volumetric example model (PyTorch, CPU) and its export to ONNX.

The network sees what the gateway will send it: patches of a CT resampled to its grid and
mapped through the lung window. So the training volumes are phantoms rendered directly on that
grid (:func:`training.phantoms.phantom_volume` at the card's spacing), and the patches are
random crops of them, half of them around a nodule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.fit import onnx_file, optimise
from training.phantoms import FIELD_OF_VIEW_MM, LUNG_WINDOW, phantom_volume
from training.volume_cards import VolumeCard

BATCH = 6
VOLUMES = 16
CROP = (16, 48, 48)
"""Training patches: smaller than the served ROI (the network is fully convolutional), so a
step costs a third as much on two cores."""
BACKGROUND, LUNG, NODULE = 0, 1, 2


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class UNet3D(nn.Module):
    """Two down-sampling levels and a dilated bottleneck; logits of background, lung, nodule."""

    def __init__(self, classes: int, width: int = 8) -> None:
        super().__init__()
        one, two, four = width, 2 * width, 4 * width
        self.first = nn.Sequential(_conv(1, one), _conv(one, one))
        self.second = nn.Sequential(_conv(one, two, 2), _conv(two, two))
        self.third = nn.Sequential(_conv(two, four, 2), _conv(four, four, dilation=2))
        self.up_two = nn.ConvTranspose3d(four, two, 2, stride=2)
        self.mix_two = _conv(2 * two, two)
        self.up_one = nn.ConvTranspose3d(two, one, 2, stride=2)
        self.mix_one = _conv(2 * one, one)
        self.head = nn.Conv3d(one, classes, 1)

    def forward(self, image: Tensor) -> Tensor:
        first = self.first(image)
        second = self.second(first)
        third = self.third(second)
        two = self.mix_two(torch.cat([self.up_two(third), second], 1))
        one = self.mix_one(torch.cat([self.up_one(two), first], 1))
        logits: Tensor = self.head(one)
        return logits


@dataclass(frozen=True)
class Volumes:
    """Training volumes on the model's grid: windowed values and labels."""

    values: list[npt.NDArray[np.float32]]
    labels: list[npt.NDArray[np.uint8]]


def windowed(hu: np.ndarray) -> npt.NDArray[np.float32]:
    """The lung window to 0..1, as ``aicoco.input.intensity`` ``window`` maps it."""
    centre, width = LUNG_WINDOW
    values: npt.NDArray[np.float32] = np.clip(
        (hu.astype(np.float32) - (centre - width / 2)) / width, 0.0, 1.0
    )
    return values


def make_volumes(card: VolumeCard, seed: int) -> Volumes:
    rng = np.random.default_rng(seed)
    size = round(FIELD_OF_VIEW_MM / card.spacing[1])
    values, labels = [], []
    for _ in range(VOLUMES):
        slices = int(rng.integers(90, 141))
        volume = phantom_volume(
            rng, slices, size, slice_thickness_mm=card.spacing[0], noise_hu=rng.uniform(8, 35)
        )
        label = np.where(volume.lung, LUNG, BACKGROUND).astype(np.uint8)
        label[volume.lesion_labels > 0] = NODULE
        values.append(windowed(volume.hu))
        labels.append(label)
    return Volumes(values, labels)


def _crop(
    rng: np.random.Generator, shape: tuple[int, ...], roi: tuple[int, int, int], at: np.ndarray
) -> tuple[slice, ...]:
    starts = [
        int(np.clip(centre - rng.uniform(0.2, 0.8) * r, 0, n - r))
        for centre, r, n in zip(at, roi, shape, strict=True)
    ]
    return tuple(slice(s, s + r) for s, r in zip(starts, roi, strict=True))


@dataclass(frozen=True)
class Trained:
    net: nn.Module
    steps: int
    seconds: float


def train(card: VolumeCard, data: Volumes, steps: int, seed: int) -> Trained:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet3D(card.channels)
    nodules = [np.argwhere(label == NODULE) for label in data.labels]
    weights = torch.tensor([0.3, 1.0, 3.0])

    def batch() -> tuple[Tensor, Tensor]:
        x = np.empty((BATCH, 1, *CROP), dtype=np.float32)
        y = np.empty((BATCH, *CROP), dtype=np.int64)
        for k in range(BATCH):
            i = int(rng.integers(len(data.values)))
            shape = data.values[i].shape
            if rng.random() < 0.5 and len(nodules[i]):
                at = nodules[i][rng.integers(len(nodules[i]))]
            else:
                at = np.array([rng.integers(0, n) for n in shape])
            window = _crop(rng, shape, CROP, at)
            x[k, 0] = data.values[i][window]
            y[k] = data.labels[i][window]
        return torch.from_numpy(x), torch.from_numpy(y)

    def loss_of_step() -> Tensor:
        x, y = batch()
        logits = net(x)
        probabilities = torch.softmax(logits, 1)
        target = F.one_hot(y, card.channels).permute(0, 4, 1, 2, 3).float()
        overlap = (probabilities * target).sum((0, 2, 3, 4))
        total = probabilities.sum((0, 2, 3, 4)) + target.sum((0, 2, 3, 4))
        dice = 1 - ((2 * overlap + 1) / (total + 1))[1:].mean()
        return F.cross_entropy(logits, y, weight=weights) + dice

    return Trained(net, steps, optimise(net, steps, 3e-3, loss_of_step))


def export(net: nn.Module, card: VolumeCard) -> bytes:
    example = torch.rand((2, 1, *card.roi), generator=torch.Generator().manual_seed(0))
    return onnx_file(net, (example,), ["image"], ["logits"], f"{card.name}: {card.summary}")
