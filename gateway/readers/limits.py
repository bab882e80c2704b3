"""Pixel bounds, checked against the dimensions a header declares before anything is decoded.

A 1 KiB PNG or DICOM can declare 65535 x 65535 pixels: decoding it first would allocate gigabytes
(a decompression bomb). Every reader reports its header's dimensions here first, so a request
over a bound fails with 413 having allocated nothing for pixels.
"""

from __future__ import annotations

from gateway.errors import ImageTooLarge, UnreadableFile
from gateway.readers.base import ReadLimits


class VoxelBudget:
    """The pixels a request's files declare, frame by frame and in total."""

    def __init__(self, limits: ReadLimits) -> None:
        self.limits = limits
        self.total = 0

    def claim(self, file_name: str, rows: int, columns: int, frames: int = 1) -> None:
        """Count ``frames`` slices of ``rows x columns``; ImageTooLarge past either bound."""
        if rows <= 0 or columns <= 0 or frames <= 0:
            raise UnreadableFile(
                f"'{file_name}' declares {frames} x {rows} x {columns} pixels: every dimension "
                "must be at least 1",
                details={"file_name": file_name},
            )
        per_frame = rows * columns
        if per_frame > self.limits.max_pixels_per_image:
            raise ImageTooLarge(
                f"'{file_name}' declares {rows} x {columns} = {per_frame:,} pixels per image; "
                f"the limit is {self.limits.max_pixels_per_image:,} (MAX_PIXELS_PER_IMAGE)",
                details={
                    "file_name": file_name,
                    "pixels": per_frame,
                    "limit": self.limits.max_pixels_per_image,
                },
            )
        self.total += per_frame * frames
        if self.total > self.limits.max_total_voxels:
            raise ImageTooLarge(
                f"the request's images hold at least {self.total:,} voxels (counting "
                f"'{file_name}', {frames} x {rows} x {columns}); the limit is "
                f"{self.limits.max_total_voxels:,} (MAX_TOTAL_VOXELS)",
                details={
                    "file_name": file_name,
                    "voxels": self.total,
                    "limit": self.limits.max_total_voxels,
                },
            )
