"""MONAI's ``sliding_window_inference``: where its patches go, how they are weighted, and the
accumulator that blends them, in bounded memory and in any order.

For a volume of ``shape`` and a model ROI ``roi`` (both ``(z, y, x)``):

- **Padding.** An axis shorter than the ROI is padded to it, ``(roi - n) // 2`` before and the
  rest after, with MONAI's ``padding_mode`` (``constant`` with ``cval``, ``replicate``,
  ``reflect``); the result is cropped back.
- **Positions.** Along each axis the step is ``int(roi * (1 - overlap))`` (at least 1; the ROI
  itself where it spans the axis); patches start at multiples of it until one reaches the end,
  and a last one that would run past the end is moved back to end there. Patches are in
  ``meshgrid(..., indexing="ij")`` order, x fastest (``dense_patch_slices``).
- **Weights.** ``constant``: 1 everywhere. ``gaussian``: the product over axes of
  ``exp(-d**2 / (2 * (sigma_scale * roi)**2))`` with ``d`` the distance from the patch's centre,
  then clamped below at its minimum or 1e-3, whichever is larger (``compute_importance_map``).
- **Blend.** Each voxel's output is the weighted sum of the patches covering it over the sum of
  their weights.

Mirroring (nnU-Net's test-time augmentation) averages, for every patch, the model's answer on
the patch and on each of its flips over every non-empty subset of ``mirror_axes``, each flipped
back, before the blend.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gateway.volumes.grid import Float32Array, Shape

Blend = Literal["constant", "gaussian"]
Padding = Literal["constant", "replicate", "reflect"]

_NUMPY_PAD = {"constant": "constant", "replicate": "edge", "reflect": "reflect"}
MIN_WEIGHT = 1e-3


def scan_interval(shape: Shape, roi: Shape, overlap: Sequence[float]) -> Shape:
    z, y, x = (
        r if r == n else max(int(r * (1 - o)), 1)
        for n, r, o in zip(shape, roi, overlap, strict=True)
    )
    return z, y, x


def patch_starts(shape: Shape, roi: Shape, interval: Shape) -> list[Shape]:
    """Every patch's first voxel on a (padded) volume of ``shape``, in MONAI's order."""
    per_axis = []
    for n, r, step in zip(shape, roi, interval, strict=True):
        count = math.ceil(n / step)
        last = next((d for d in range(count) if d * step + r >= n), None)
        number = last + 1 if last is not None else 1
        per_axis.append([d * step - max(d * step + r - n, 0) for d in range(number)])
    return [(z, y, x) for z in per_axis[0] for y in per_axis[1] for x in per_axis[2]]


def pad_widths(shape: Shape, roi: Shape) -> tuple[tuple[int, int], ...]:
    widths = []
    for n, r in zip(shape, roi, strict=True):
        missing = max(r - n, 0)
        widths.append((missing // 2, missing - missing // 2))
    return tuple(widths)


def _padded(shape: Shape, padding: tuple[tuple[int, int], ...]) -> Shape:
    z, y, x = (n + before + after for n, (before, after) in zip(shape, padding, strict=True))
    return z, y, x


def importance_map(roi: Shape, blend: Blend, sigma_scale: float) -> Float32Array:
    if blend == "constant":
        return np.ones(roi, dtype=np.float32)
    weights: Float32Array = np.ones((), dtype=np.float32)
    for axis, size in enumerate(roi):
        sigma = size * sigma_scale
        distance = np.arange(size, dtype=np.float32) - np.float32((size - 1) / 2.0)
        line = np.exp(distance**2 / np.float32(-2 * sigma**2)).astype(np.float32)
        weights = weights[..., None] * line if axis else line
    floor = max(float(weights.min()), MIN_WEIGHT)
    clamped: Float32Array = np.maximum(weights, np.float32(floor))
    return clamped


def mirrorings(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """The flips averaged for each patch: none, then every non-empty subset of ``axes``."""
    return [
        combination
        for size in range(len(axes) + 1)
        for combination in itertools.combinations(axes, size)
    ]


@dataclass(frozen=True)
class Plan:
    """How one volume is covered: its padded shape, the patches and their weights."""

    shape: Shape
    """Of the volume before padding."""
    roi: Shape
    padding: tuple[tuple[int, int], ...]
    starts: list[Shape]
    weights: Float32Array

    @classmethod
    def of(
        cls, shape: Shape, roi: Shape, overlap: Sequence[float], blend: Blend, sigma_scale: float
    ) -> Plan:
        padding = pad_widths(shape, roi)
        padded = _padded(shape, padding)
        return cls(
            shape,
            roi,
            padding,
            patch_starts(padded, roi, scan_interval(padded, roi, overlap)),
            importance_map(roi, blend, sigma_scale),
        )

    @property
    def padded_shape(self) -> Shape:
        return _padded(self.shape, self.padding)

    @property
    def crop(self) -> tuple[slice, ...]:
        """The volume before padding, within the padded one."""
        return tuple(
            slice(before, before + n)
            for n, (before, _) in zip(self.shape, self.padding, strict=True)
        )

    def pad(self, volume: Float32Array, mode: Padding, value: float) -> Float32Array:
        """``volume`` (of :attr:`shape`) padded up to the ROI where it is shorter, with MONAI's
        ``padding_mode`` (and ``cval`` for ``constant``); itself where it is not."""
        if self.padded_shape == self.shape:
            return volume
        if mode == "constant":
            padded: Float32Array = np.pad(
                volume, self.padding, mode="constant", constant_values=value
            )
        else:
            padded = np.pad(volume, self.padding, mode=_NUMPY_PAD[mode])  # type: ignore[call-overload]
        return padded

    def window(self, start: Shape) -> tuple[slice, slice, slice]:
        z, y, x = (slice(s, s + r) for s, r in zip(start, self.roi, strict=True))
        return z, y, x

    def patches(self, volume: Float32Array, starts: Sequence[Shape]) -> Float32Array:
        """``(len(starts), 1, *roi)``: the model's input for these patches of the padded
        volume."""
        batch = np.empty((len(starts), 1, *self.roi), dtype=np.float32)
        for i, start in enumerate(starts):
            batch[i, 0] = volume[self.window(start)]
        return batch


class Accumulator:
    """The weighted sums of every patch's channels and the sums of their weights, on the padded
    volume: ``4 * (channels + 1)`` bytes per padded voxel, whatever the overlap."""

    def __init__(self, plan: Plan, channels: int) -> None:
        self.plan = plan
        self.sums = np.zeros((channels, *plan.padded_shape), dtype=np.float32)
        self.counts = np.zeros(plan.padded_shape, dtype=np.float32)

    @staticmethod
    def bytes_for(padded_voxels: int, channels: int) -> int:
        return 4 * (channels + 1) * padded_voxels

    def add(self, start: Shape, patch: Float32Array, *, weigh: bool = True) -> None:
        """One patch's ``(channels, *roi)`` answer; ``weigh=False`` for a further part of the
        same patch's answer (a mirroring), whose weight is already counted."""
        window = self.plan.window(start)
        self.sums[(slice(None), *window)] += patch * self.plan.weights
        if weigh:
            self.counts[window] += self.plan.weights

    def result(self) -> Float32Array:
        """``(channels, *shape)``: the blend, cropped to the volume before padding. Divides in
        place: the accumulator is spent."""
        self.sums /= self.counts
        cropped: Float32Array = self.sums[(slice(None), *self.plan.crop)]
        return cropped
