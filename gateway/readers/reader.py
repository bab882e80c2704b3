"""``read_images``: a request's files and entries into one :class:`ImageSet`.

A request is one stack of slices, sent either as

- one file with one or more slices (a PNG, a DICOM file of any number of frames, a NIfTI
  volume), with one ``images`` entry per slice (in ``index`` order) or a single entry for the
  whole stack; or
- several single-slice files, one entry each: a DICOM series (ordered in space, see
  :mod:`gateway.readers.series`), or PNG/JPEG images or 2-D NIfTI files (ordered by ``index``).
  DICOM files of several series are a study: the series rules of
  :mod:`gateway.readers.selection` choose one, and the others' files are left out (the answer
  lists only the chosen series' entries).

Every header is read and checked against the limits before any pixel is decoded, so a bomb or an
inconsistent series is refused at the cost of reading headers only. DICOM files are not mixed with
other kinds in one request; PNG and JPEG may be mixed (both are 8-bit pictures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from aicoco import AiImage
from gateway.errors import InconsistentSeries, InvalidInput
from gateway.readers import dicom, nifti, raster
from gateway.readers.base import ImageSet, ReadLimits
from gateway.readers.detect import FileKind, detect
from gateway.readers.limits import VoxelBudget
from gateway.readers.matching import FileEntries, match
from gateway.readers.selection import chosen_series
from gateway.readers.series import check_series, order_series
from gateway.readers.stack import StackBuilder
from gateway.request import Upload


def read_images(
    images: Sequence[AiImage], uploads: Mapping[str, Upload], limits: ReadLimits
) -> ImageSet:
    """Read, check and stack the request's files (CPU-bound: call it off the event loop)."""
    pairs = match(images, uploads)
    budget = VoxelBudget(limits)
    kinds = [detect(pair.upload) for pair in pairs]
    if len(pairs) == 1:
        return _one_file(pairs[0], kinds[0], budget)
    for pair in pairs:
        if len(pair.entries) > 1:
            raise InvalidInput(
                f"{len(pair.entries)} images entries name '{pair.upload.file_name}', but the "
                f"request has {len(pairs)} files: several entries may share a file only when it "
                "is the request's one file (a volume)",
                details={"file_name": pair.upload.file_name},
            )
    if len({kind.family for kind in kinds}) > 1:
        examples = {
            kind.value: pair.upload.file_name for pair, kind in zip(pairs, kinds, strict=True)
        }
        raise InconsistentSeries(
            "the files of one request form one stack and must be of one kind; got "
            + ", ".join(f"{kind} ('{name}')" for kind, name in examples.items()),
            details={"kinds": examples},
        )
    if kinds[0] is FileKind.DICOM:
        return _dicom_series(pairs, budget)
    if kinds[0] is FileKind.NIFTI:
        return _nifti_slices(pairs, budget)
    return _raster_slices(pairs, budget)


def _one_file(pair: FileEntries, kind: FileKind, budget: VoxelBudget) -> ImageSet:
    upload = pair.upload
    if kind is FileKind.DICOM:
        header = dicom.read_header(upload, budget)
        builder = StackBuilder(header.frames)
        for z, frame in enumerate(dicom.decode_frames(header)):
            builder.put(z, frame, upload.file_name)
        pixels = builder.result()
        spacing = _spacing(header.pixel_spacing, header.slice_spacing, pixels.shape[0])
        return _image_set(pair, pixels, header.hounsfield, spacing, header.modality)
    if kind is FileKind.NIFTI:
        volume = nifti.read_volume(nifti.read_header(upload, budget))
        return _image_set(pair, volume.pixels, volume.hounsfield, volume.spacing, None)
    picture = raster.read(upload, budget)
    return _image_set(pair, picture[None], False, None, None)


def _image_set(
    pair: FileEntries,
    pixels: np.ndarray,
    hounsfield: bool,
    spacing: tuple[float, float, float] | None,
    modality: str | None,
) -> ImageSet:
    """The one file's stack with its entries: one per slice, or one for the whole stack."""
    depth, entries = pixels.shape[0], pair.entries
    if len(entries) not in (1, depth):
        raise InvalidInput(
            f"'{pair.upload.file_name}' holds {depth} slice(s) but {len(entries)} images entries "
            f"name it: send one entry per slice ({depth}) or one entry for the whole volume",
            details={
                "file_name": pair.upload.file_name,
                "slices": depth,
                "entries": len(entries),
            },
        )
    return ImageSet(pixels, hounsfield, spacing, list(entries), modality)


def _dicom_series(pairs: Sequence[FileEntries], budget: VoxelBudget) -> ImageSet:
    pairs, headers = _one_series(pairs, [dicom.read_header(pair.upload, budget) for pair in pairs])
    for header in headers:
        _require_one_slice(header.file_name, header.frames, len(pairs))
    check_series(headers)
    series = order_series(headers)
    builder = StackBuilder(len(headers))
    for z, i in enumerate(series.order):
        for frame in dicom.decode_frames(headers[i]):
            builder.put(z, frame, headers[i].file_name)
    modalities = {h.modality for h in headers}
    first = headers[series.order[0]]
    return ImageSet(
        pixels=builder.result(),
        hounsfield=all(h.hounsfield for h in headers),
        spacing=_spacing(
            first.pixel_spacing, series.slice_spacing or first.slice_spacing, len(headers)
        ),
        slice_images=[pairs[i].entries[0] for i in series.order],
        modality=modalities.pop() if len(modalities) == 1 else None,
    )


def _one_series(
    pairs: Sequence[FileEntries], headers: Sequence[dicom.DicomHeader]
) -> tuple[Sequence[FileEntries], Sequence[dicom.DicomHeader]]:
    """Files of several series: the one :mod:`gateway.readers.selection` chooses, alone."""
    keep = chosen_series([header.dataset for header in headers])
    return [pairs[i] for i in keep], [headers[i] for i in keep]


def _nifti_slices(pairs: Sequence[FileEntries], budget: VoxelBudget) -> ImageSet:
    headers = [nifti.read_header(pair.upload, budget) for pair in pairs]
    for header in headers:
        _require_one_slice(header.upload.file_name, header.shape[0], len(pairs))
    _same_size([(h.upload.file_name, h.shape[1:]) for h in headers])
    builder = StackBuilder(len(headers))
    hounsfield = True
    for z, header in enumerate(headers):
        volume = nifti.read_volume(header)
        hounsfield = hounsfield and volume.hounsfield
        builder.put(z, volume.pixels[0], header.upload.file_name)
    return ImageSet(
        pixels=builder.result(),
        hounsfield=hounsfield,
        spacing=headers[0].spacing,
        slice_images=[pair.entries[0] for pair in pairs],
    )


def _raster_slices(pairs: Sequence[FileEntries], budget: VoxelBudget) -> ImageSet:
    headers = [raster.read_header(pair.upload, budget) for pair in pairs]
    _same_size([(h.upload.file_name, h.size) for h in headers])
    builder = StackBuilder(len(headers))
    first_dtype: np.dtype | None = None
    for z, header in enumerate(headers):
        picture = raster.read_pixels(header)
        first_dtype = first_dtype or picture.dtype
        if picture.dtype != first_dtype:
            raise InconsistentSeries(
                f"'{header.upload.file_name}' has {picture.dtype.itemsize * 8}-bit pixels but "
                f"'{headers[0].upload.file_name}' has {first_dtype.itemsize * 8}-bit: the images "
                "of one request must share one bit depth",
                details={"file_names": [headers[0].upload.file_name, header.upload.file_name]},
            )
        builder.put(z, picture, header.upload.file_name)
    return ImageSet(
        pixels=builder.result(),
        hounsfield=False,
        spacing=None,
        slice_images=[pair.entries[0] for pair in pairs],
    )


def _require_one_slice(file_name: str, slices: int, files: int) -> None:
    if slices != 1:
        raise InvalidInput(
            f"'{file_name}' holds {slices} slices, but the request has {files} files: a request "
            "sends either one file (of any number of slices) or several single-slice files",
            details={"file_name": file_name, "slices": slices},
        )


def _same_size(sizes: Sequence[tuple[str, tuple[int, ...]]]) -> None:
    first_name, first_size = sizes[0]
    for name, size in sizes[1:]:
        if size != first_size:
            raise InconsistentSeries(
                f"'{name}' is {size[0]} x {size[1]} pixels but '{first_name}' is "
                f"{first_size[0]} x {first_size[1]}: the images of one request must share one size",
                details={"file_names": [first_name, name]},
            )


def _spacing(
    pixel_spacing: tuple[float, float] | None, slice_spacing: float | None, depth: int
) -> tuple[float, float, float] | None:
    """(z, row, col) mm; a single slice's unknown thickness is 1.0, a stack's is unknown."""
    if pixel_spacing is None:
        return None
    if slice_spacing is None:
        if depth > 1:
            return None
        slice_spacing = 1.0
    return float(slice_spacing), float(pixel_spacing[0]), float(pixel_spacing[1])
