"""The file formats the readers know: each declared once, as a :class:`Format`, and registered
here, in the order detection tries them.

A format module (``dicom``, ``nifti``, ``raster``) provides the format's parts: a cheap ``sniff``
of the first bytes, optionally a costlier ``fallback`` for files whose first bytes say nothing
(a DICOM dataset without preamble), the read of one file with all its slices, and the read of
several single-slice files as one stack. Adding a format is one new module plus one member of
:class:`FileKind`; :func:`gateway.readers.detect.detect`, :func:`gateway.readers.read_images` and
the 415 message take it from there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.inference import Upload
from gateway.readers import dicom, nifti, raster, series
from gateway.readers.base import ImageSet
from gateway.readers.limits import VoxelBudget
from gateway.readers.matching import FileEntries


@dataclass(frozen=True, eq=False)
class Format:
    name: str
    """As messages and details name it: ``DICOM``, ``PNG``."""
    described: str
    """As the 415 message lists it: ``NIfTI-1/2 .nii or .nii.gz``."""
    sniff: Callable[[bytes, Upload], bool]
    """Whether the file's first bytes (1 KiB) are this format's."""
    read_file: Callable[[FileEntries, VoxelBudget], ImageSet]
    """One file of any number of slices, with the entries that name it."""
    read_stack: Callable[[Sequence[FileEntries], VoxelBudget], ImageSet]
    """Several single-slice files, one entry each, as one stack."""
    family: str = ""
    """Formats of one family stack together (PNG with JPEG); empty: the format alone."""
    fallback: Callable[[Upload], bool] | None = None
    """Tried after every format's ``sniff`` failed: a costlier look at the whole file."""

    @property
    def stacks_with(self) -> str:
        return self.family or self.name

    def __repr__(self) -> str:
        return f"<Format {self.name}>"


class FileKind(enum.Enum):
    """The registered formats, in detection order; each member's value is its :class:`Format`.

    The sniffs look at different bytes (DICOM's prefix at 128, NIfTI's header size and magic,
    PNG's and JPEG's signatures at 0), so no file is claimed by two; the order only sets how the
    formats are listed."""

    DICOM = Format(
        "DICOM",
        "DICOM",
        dicom.sniff,
        dicom.read_file,
        series.read_series,
        fallback=dicom.claims_raw,
    )
    NIFTI = Format(
        "NIfTI", "NIfTI-1/2 .nii or .nii.gz", nifti.sniff, nifti.read_file, nifti.read_stack
    )
    PNG = Format(
        "PNG",
        "PNG",
        raster.sniff_png,
        raster.read_file,
        raster.read_stack,
        family="PNG/JPEG",
    )
    JPEG = Format(
        "JPEG",
        "JPEG",
        raster.sniff_jpeg,
        raster.read_file,
        raster.read_stack,
        family="PNG/JPEG",
    )

    @property
    def format(self) -> Format:
        return self.value
