"""File readers: a request's DICOM, NIfTI, PNG and JPEG uploads into one stack of slices.

``read_images(images, uploads, limits) -> ImageSet`` is the whole API: synchronous and CPU-bound
(pipelines run it through the app's ``gateway.cpu_pool.CpuPool``). The conventions -- file
detection, matching, stack order, orientation, values -- are documented in the modules:
:mod:`~gateway.readers.detect`, :mod:`~gateway.readers.matching`,
:mod:`~gateway.readers.reader`, :mod:`~gateway.readers.dicom`, :mod:`~gateway.readers.series`,
:mod:`~gateway.readers.nifti`, :mod:`~gateway.readers.raster`.
"""

from gateway.errors import (
    ApiError,
    FileMismatch,
    ImageTooLarge,
    InconsistentSeries,
    InvalidInput,
    UnreadableFile,
    UnsupportedFileType,
    UnsupportedImage,
)
from gateway.readers.base import ImageSet, ReadLimits
from gateway.readers.reader import read_images

RAISES: tuple[type[ApiError], ...] = (
    UnsupportedFileType,
    UnreadableFile,
    UnsupportedImage,
    InconsistentSeries,
    ImageTooLarge,
    FileMismatch,
    InvalidInput,
)
"""What reading a request's images can raise (the routes that read declare it)."""

__all__ = ["RAISES", "ImageSet", "ReadLimits", "read_images"]
