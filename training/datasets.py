"""Training and held-out sets built from phantoms, at the resolution a model sees.

The gateway resizes every slice to the model's ``size`` and windows it (or divides an 8-bit
rendering by 255), so the sets here are made the same way: phantoms are generated at the
512 x 512 of a real CT or directly at the model size, resized with or without anti-aliasing
(resamplers differ), and turned into the model's input by :func:`model_input`, which also
plays the 8-bit PNG path and slightly different windows when augmenting. numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from training.phantoms import (
    LUNG_WINDOW,
    PhantomSlice,
    phantom_slice,
    phantom_volume,
    pixel_spacing_mm,
    resize_bilinear,
    window_to_unit,
)

__all__ = [
    "LEFT_LUNG",
    "LESION",
    "RIGHT_LUNG",
    "SliceSet",
    "make_slice_set",
    "make_volume_slice_set",
    "model_input",
]

RIGHT_LUNG = 1
LEFT_LUNG = 2
LESION = 4
"""Bits of :attr:`SliceSet.labels`."""

_REAL_SIZE = 512


@dataclass(frozen=True)
class SliceSet:
    """Slices at one model size with their ground truth, compact enough to hold thousands."""

    hu: npt.NDArray[np.int16]
    """``(N, S, S)`` Hounsfield units after resizing to ``S``."""
    labels: npt.NDArray[np.uint8]
    """``(N, S, S)`` bit mask of :data:`RIGHT_LUNG`, :data:`LEFT_LUNG`, :data:`LESION`."""
    lesions: npt.NDArray[np.float32]
    """``(M, 5)`` rows of ``slice, row, col, radius_px, diameter_mm`` at size ``S``."""

    @property
    def size(self) -> int:
        return int(self.hu.shape[-1])

    @property
    def spacing_mm(self) -> float:
        return pixel_spacing_mm(self.size)

    def lesions_of(self, index: int) -> npt.NDArray[np.float32]:
        rows: npt.NDArray[np.float32] = self.lesions[self.lesions[:, 0] == index, 1:]
        return rows


def _shrink(
    rng: np.random.Generator, image: npt.NDArray[np.floating], size: int
) -> npt.NDArray[np.float32]:
    """Resize like one of the resamplers a client or the gateway may use."""
    factor = image.shape[-1] / size
    if factor > 1.0 and rng.random() < 0.5:
        sigma = [0.0] * (image.ndim - 2) + [(factor - 1.0) / 2.0] * 2
        image = ndimage.gaussian_filter(image.astype(np.float32), sigma)
    return resize_bilinear(image, (size, size))


def _pack_labels(
    right: npt.NDArray[np.bool_], left: npt.NDArray[np.bool_], lesion: npt.NDArray[np.bool_]
) -> npt.NDArray[np.uint8]:
    packed = right * np.uint8(RIGHT_LUNG) | left * np.uint8(LEFT_LUNG) | lesion * np.uint8(LESION)
    result: npt.NDArray[np.uint8] = packed.astype(np.uint8)
    return result


def _resize_mask(mask: npt.NDArray[np.bool_], size: int) -> npt.NDArray[np.bool_]:
    if mask.shape[-1] == size:
        return mask
    result: npt.NDArray[np.bool_] = resize_bilinear(mask.astype(np.float32), (size, size)) > 0.5
    return result


def _slice_at_size(
    rng: np.random.Generator, phantom: PhantomSlice, size: int
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], float]:
    scale = size / phantom.hu.shape[-1]
    hu = phantom.hu if scale == 1.0 else _shrink(rng, phantom.hu.astype(np.float32), size)
    labels = _pack_labels(
        _resize_mask(phantom.masks["right_lung"], size),
        _resize_mask(phantom.masks["left_lung"], size),
        _resize_mask(phantom.masks["lesion"], size),
    )
    return np.rint(hu).astype(np.int16), labels, scale


def make_slice_set(seed: int, count: int, size: int) -> SliceSet:
    """``count`` axial phantom slices, half made at 512 and resized, half made at ``size``.

    Noise varies from 8 to 35 HU; half the slices have no nodule, the rest 1 to 3.
    """
    rng = np.random.default_rng(seed)
    hu = np.empty((count, size, size), dtype=np.int16)
    labels = np.empty((count, size, size), dtype=np.uint8)
    lesions: list[tuple[float, float, float, float, float]] = []
    for index in range(count):
        made_at = _REAL_SIZE if index % 2 == 0 else size
        phantom = phantom_slice(rng, made_at, noise_hu=float(rng.uniform(8.0, 35.0)))
        hu[index], labels[index], scale = _slice_at_size(rng, phantom, size)
        for lesion in phantom.lesions:
            row, col = lesion.center
            lesions.append(
                (index, row * scale, col * scale, lesion.radius_px * scale, lesion.diameter_mm)
            )
    return SliceSet(hu, labels, np.asarray(lesions, dtype=np.float32).reshape(-1, 5))


def make_volume_slice_set(
    seed: int, volumes: int, slices: int, size: int
) -> tuple[SliceSet, npt.NDArray[np.int32]]:
    """The slices of ``volumes`` phantom volumes, and the volume each slice comes from.

    Every third volume is made at 512 and resized slice by slice, as the gateway does with a
    real CT; slice thickness varies from 1.5 to 6 mm so spheres span few or many slices.
    """
    rng = np.random.default_rng(seed)
    total = volumes * slices
    hu = np.empty((total, size, size), dtype=np.int16)
    labels = np.empty((total, size, size), dtype=np.uint8)
    owner = np.repeat(np.arange(volumes, dtype=np.int32), slices)
    lesions: list[tuple[float, float, float, float, float]] = []
    for v in range(volumes):
        made_at = _REAL_SIZE if v % 3 == 0 else size
        volume = phantom_volume(
            rng,
            slices,
            made_at,
            slice_thickness_mm=float(rng.uniform(1.5, 6.0)),
            noise_hu=float(rng.uniform(8.0, 35.0)),
        )
        scale = size / made_at
        start = v * slices
        lesion = volume.lesion_labels > 0
        for z in range(slices):
            image = volume.hu[z].astype(np.float32)
            hu[start + z] = np.rint(image if scale == 1.0 else _shrink(rng, image, size))
            labels[start + z] = _pack_labels(
                _resize_mask(volume.lung_labels[z] == 1, size),
                _resize_mask(volume.lung_labels[z] == 2, size),
                _resize_mask(lesion[z], size),
            )
        for number, item in enumerate(volume.lesions, start=1):
            areas = (volume.lesion_labels == number).sum(axis=(1, 2))
            for layer in np.flatnonzero(areas):
                radius = math.sqrt(float(areas[layer]) / math.pi) * scale
                row, col = item.center[1], item.center[2]
                lesions.append(
                    (start + int(layer), row * scale, col * scale, radius, item.diameter_mm)
                )
    return SliceSet(hu, labels, np.asarray(lesions, dtype=np.float32).reshape(-1, 5)), owner


def model_input(
    hu: npt.NDArray[np.int16], rng: np.random.Generator | None = None
) -> npt.NDArray[np.float32]:
    """``(B, S, S)`` HU -> the ``(B, 1, S, S)`` tensor the gateway sends.

    Without ``rng``: the exact lung window, as for a CT in Hounsfield units. With ``rng``
    (training): per slice, a window jittered around the lung window and, for 40 % of slices,
    the 8-bit quantisation of a PNG rendering.
    """
    center, width = LUNG_WINDOW
    if rng is None:
        return window_to_unit(hu, center, width)[:, None]
    count = hu.shape[0]
    jitter = rng.random(count) < 0.5
    centers = np.where(jitter, center + rng.uniform(-100.0, 100.0, count), center)
    widths = np.where(jitter, width * rng.uniform(0.8, 1.25, count), width)
    low = (centers - widths / 2.0).astype(np.float32)[:, None, None]
    unit = np.clip((hu.astype(np.float32) - low) / widths.astype(np.float32)[:, None, None], 0, 1)
    quantise = rng.random(count) < 0.4
    unit[quantise] = np.rint(unit[quantise] * 255.0) / 255.0
    result: npt.NDArray[np.float32] = unit.astype(np.float32)[:, None]
    return result
