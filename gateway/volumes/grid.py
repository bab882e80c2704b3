"""A volume on another voxel spacing, and probabilities back on the original grid.

The grid is MONAI ``Spacing``'s for an axis-aligned volume (``compute_shape_offset`` with
``scale_extent=False``): the first voxel centre stays where it is, the new centres are
``target`` apart, and along each axis there are ``round((n - 1) * spacing / target + 1)`` of them
(numpy's round, half to even, as MONAI's). Values are interpolated linearly, and a centre past
the last input voxel takes the border value (``bilinear`` with ``padding_mode="border"``).

Trilinear interpolation on an axis-aligned grid is three 1D interpolations, one axis after the
other, so a volume is resampled a block of output slices at a time: the temporaries are a few
slices, never a float copy of the input (a 300 x 512 x 512 CT is 150 MiB as int16 and would be
300 MiB as float32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
Shape = tuple[int, int, int]
Spacing = tuple[float, float, float]

BLOCK_SLICES = 16
"""Output slices interpolated at once: bounds the float temporaries of a long volume."""


def resampled_shape(shape: Shape, spacing: Spacing, target: Spacing) -> Shape:
    """The shape MONAI's ``Spacing(pixdim=target)`` gives a volume of ``shape`` at ``spacing``."""
    z, y, x = (
        int(np.round((n - 1) * (float(have) / float(want)) + 1.0))
        for n, have, want in zip(shape, spacing, target, strict=True)
    )
    return z, y, x


@dataclass(frozen=True)
class Axis:
    """Where each output voxel along one axis reads: two input indices and the second's weight."""

    first: npt.NDArray[np.intp]
    second: npt.NDArray[np.intp]
    weight: Float32Array

    @classmethod
    def between(cls, size_in: int, size_out: int, step: float) -> Axis:
        """Output voxel ``i`` sits at input index ``i * step``, clamped to the border."""
        at = np.clip(np.arange(size_out, dtype=np.float64) * step, 0.0, size_in - 1)
        first = np.floor(at).astype(np.intp)
        second = np.minimum(first + 1, size_in - 1)
        return cls(first, second, (at - first).astype(np.float32))

    def apply(self, values: np.ndarray, axis: int) -> Float32Array:
        """Interpolate ``values`` along ``axis``: always a new float32 array."""
        shape = [1] * values.ndim
        shape[axis] = -1
        weight = self.weight.reshape(shape)
        # take() copies, so both may be scaled in place: two arrays of the output's size, not
        # four (a block of a 512 x 512 volume's probabilities is tens of MiB).
        low = np.take(values, self.first, axis=axis).astype(np.float32, copy=False)
        high = np.take(values, self.second, axis=axis).astype(np.float32, copy=False)
        low *= np.float32(1.0) - weight
        high *= weight
        low += high
        out: Float32Array = low
        return out


@dataclass(frozen=True)
class Resampling:
    """From a grid of ``shape_in`` voxels at ``spacing_in`` to ``shape_out`` at ``spacing_out``,
    both with the first voxel centre at the same point."""

    shape_in: Shape
    shape_out: Shape
    axes: tuple[Axis, Axis, Axis]

    @classmethod
    def of(
        cls, shape_in: Shape, spacing_in: Spacing, spacing_out: Spacing, shape_out: Shape
    ) -> Resampling:
        z, y, x = (
            Axis.between(n_in, n_out, float(out) / float(have))
            for n_in, n_out, have, out in zip(
                shape_in, shape_out, spacing_in, spacing_out, strict=True
            )
        )
        return cls(shape_in, shape_out, (z, y, x))

    @classmethod
    def to_spacing(cls, shape: Shape, spacing: Spacing, target: Spacing) -> Resampling:
        """Onto MONAI ``Spacing``'s grid for ``target``."""
        return cls.of(shape, spacing, target, resampled_shape(shape, spacing, target))

    def inverse(self, spacing_in: Spacing, spacing_out: Spacing) -> Resampling:
        """Back from this resampling's output grid onto its input grid."""
        return Resampling.of(self.shape_out, spacing_out, spacing_in, self.shape_in)

    @property
    def identity(self) -> bool:
        return self.shape_in == self.shape_out and all(
            not axis.weight.any() and np.array_equal(axis.first, np.arange(len(axis.first)))
            for axis in self.axes
        )

    def blocks(
        self, volume: np.ndarray, block: int = BLOCK_SLICES
    ) -> Iterator[tuple[int, Float32Array]]:
        """``(start, values)`` of each block of output slices of ``volume`` (``(..., Z, Y, X)``:
        leading channel axes are carried along)."""
        z_axis, y_axis, x_axis = self.axes
        lead = volume.ndim - 3
        for start in range(0, self.shape_out[0], block):
            stop = min(start + block, self.shape_out[0])
            part = Axis(
                z_axis.first[start:stop], z_axis.second[start:stop], z_axis.weight[start:stop]
            )
            values = part.apply(volume, lead)
            values = y_axis.apply(values, lead + 1)
            yield start, x_axis.apply(values, lead + 2)

    def apply(
        self, volume: np.ndarray, then: Callable[[Float32Array], None] | None = None
    ) -> Float32Array:
        """The whole resampled volume as float32; ``then`` runs on each block in place (an
        intensity mapping), while it is small."""
        out = np.empty((*volume.shape[:-3], *self.shape_out), dtype=np.float32)
        for start, values in self.blocks(volume):
            if then is not None:
                then(values)
            out[..., start : start + values.shape[-3], :, :] = values
        return out
