"""A volume's values mapped as the model was trained: in place, a block of slices at a time.

Each mapping is MONAI's (or nnU-Net's) for the same numbers, on the values the readers return:
Hounsfield units for a CT with a rescale, the stored values otherwise.

- ``window`` ``(center, width)``: clipped to the window and mapped to 0..1, the 2D pipelines' CT
  window (``ScaleIntensityRange(c - w/2, c + w/2, 0, 1, clip=True)``).
- ``range``: ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip)``.
- ``zscore`` with a fixed mean and standard deviation, clipped to ``clip`` first: nnU-Net's CT
  normalisation (``CTNormalization``, its dataset's foreground percentiles and statistics).
- ``volume_zscore``: ``NormalizeIntensity()``, the volume's own mean and population standard
  deviation (MR, whose values have no fixed scale); a constant volume is only centred.
- ``none``: the values as read.

``volume_zscore`` needs the whole volume's statistics before any block is mapped, so its
statistics are gathered first (:func:`statistics`), in float64 as MONAI's on a float32 tensor
accumulate more precisely than float32 sums would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.volumes.grid import Float32Array


@dataclass(frozen=True)
class Affine:
    """``values * scale + offset``, then clipped to ``low..high`` (None: unbounded), with an
    optional clip of the input first (nnU-Net clips before it normalises)."""

    scale: float
    offset: float
    clip_in: tuple[float, float] | None = None
    clip_out: tuple[float, float] | None = None

    def __call__(self, values: Float32Array) -> None:
        if self.clip_in is not None:
            np.clip(values, self.clip_in[0], self.clip_in[1], out=values)
        values *= np.float32(self.scale)
        values += np.float32(self.offset)
        if self.clip_out is not None:
            np.clip(values, self.clip_out[0], self.clip_out[1], out=values)


def scale_range(a_min: float, a_max: float, b_min: float, b_max: float, clip: bool) -> Affine:
    """MONAI ``ScaleIntensityRange``:
    ``(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``."""
    scale = (b_max - b_min) / (a_max - a_min)
    bounds = (min(b_min, b_max), max(b_min, b_max)) if clip else None
    return Affine(scale, b_min - a_min * scale, clip_out=bounds)


def window(center: float, width: float) -> Affine:
    return scale_range(center - width / 2.0, center + width / 2.0, 0.0, 1.0, True)


def zscore(mean: float, std: float, clip: tuple[float, float] | None) -> Affine:
    return Affine(1.0 / std, -mean / std, clip_in=clip)


def statistics(volume: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation over every voxel, a block at a time."""
    count, total, squares = 0, 0.0, 0.0
    flat = volume.reshape(volume.shape[0], -1)
    for start in range(0, flat.shape[0], 16):
        block = flat[start : start + 16].astype(np.float64)
        count += block.size
        total += float(block.sum())
        squares += float(np.square(block).sum())
    if count == 0:
        return 0.0, 0.0
    mean = total / count
    return mean, float(np.sqrt(max(squares / count - mean * mean, 0.0)))


def volume_zscore(volume: np.ndarray) -> Affine:
    """MONAI ``NormalizeIntensity()`` of this volume (a standard deviation of 0 divides by 1)."""
    mean, std = statistics(volume)
    return Affine(1.0 / (std or 1.0), -mean / (std or 1.0))
