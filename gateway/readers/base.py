"""The readers' public types: what a request's files become, and the bounds on reading them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from aicoco import AiImage
from gateway.errors import UnreadableFile
from gateway.settings import MAX_VOLUME_VOXELS

if TYPE_CHECKING:
    from gateway.settings import Settings

Pixels = npt.NDArray[Any]
"""``(Z, H, W)`` grayscale (any numeric dtype) or ``(Z, H, W, 3)`` RGB ``uint8``."""


@dataclass(frozen=True)
class ReadLimits:
    """Bounds checked from headers, before any pixel is decoded (decompression bombs), and the
    bound on the volume a volumetric model works on, checked before any patch is sent."""

    max_pixels_per_image: int
    """Rows x columns of one frame or slice."""
    max_total_voxels: int
    """Pixels of the whole stack: every frame of every file of the request."""
    max_volume_voxels: int = MAX_VOLUME_VOXELS
    """Voxels of a volumetric model's resampled, padded volume."""

    @classmethod
    def of(cls, settings: Settings) -> ReadLimits:
        """The bounds every route that reads images applies, from ``MAX_PIXELS_PER_IMAGE``,
        ``MAX_TOTAL_VOXELS`` and ``MAX_VOLUME_VOXELS``."""
        return cls(
            settings.max_pixels_per_image, settings.max_total_voxels, settings.max_volume_voxels
        )


@dataclass
class ImageSet:
    """A request's files as one stack of slices, in the order the pipeline should see them.

    The stack's z order is geometric for DICOM (see :mod:`gateway.readers.series`) and the
    entries' ``index`` order otherwise, so ``slice_images[z]`` can differ from the client's
    ``index`` order: pipelines that return per-slice results pair them through
    ``slice_images``, never through positions in the client's list.
    """

    pixels: Pixels
    hounsfield: bool
    """True when the values are Hounsfield units (CT with a rescale, NIfTI that looks like CT)."""
    spacing: tuple[float, float, float] | None
    """``(z, row, col)`` in millimetres, or None when the files do not say."""
    slice_images: list[AiImage]
    """The entry of each z, or the single entry that covers the whole stack (length 1)."""
    modality: str | None = None
    """The DICOM Modality (``CT``, ``MR``...); None for other formats."""

    def __post_init__(self) -> None:
        rgb = self.pixels.ndim == 4 and self.pixels.shape[-1] == 3
        if self.pixels.ndim != 3 and not rgb:
            raise ValueError(f"pixels must be (Z, H, W) or (Z, H, W, 3), got {self.pixels.shape}")
        if rgb and self.pixels.dtype != np.uint8:
            raise ValueError(f"RGB pixels must be uint8, got {self.pixels.dtype}")
        if len(self.slice_images) not in (1, self.pixels.shape[0]):
            raise ValueError(
                f"{len(self.slice_images)} slice images for {self.pixels.shape[0]} slices"
            )


def unreadable(file_name: str, kind: str, what: str, exc: BaseException) -> UnreadableFile:
    """The 422 for a file a library could not parse: which file, what failed, the library's why."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = " ".join(lines) if lines else type(exc).__name__
    if len(reason) > 400:
        reason = reason[:400] + "..."
    return UnreadableFile(
        f"'{file_name}' is not a readable {kind}: {what} ({reason})",
        details={"file_name": file_name},
    )


def finite_range(pixels: np.ndarray) -> tuple[float, float]:
    """(min, max) over the finite values of an array; (0, 0) when there are none."""
    if pixels.size and not np.issubdtype(pixels.dtype, np.floating):
        return float(pixels.min()), float(pixels.max())
    finite = np.isfinite(pixels)
    low = float(np.min(pixels, where=finite, initial=np.inf))
    high = float(np.max(pixels, where=finite, initial=-np.inf))
    return (low, high) if low <= high else (0.0, 0.0)
