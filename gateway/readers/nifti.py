"""NIfTI-1 and NIfTI-2 volumes (``.nii``, gzip'ed ``.nii.gz``), in one documented orientation.

Orientation. NIfTI stores voxels in any axis order; the affine (sform, else qform, else the
pixdims, as nibabel chooses) maps them to patient RAS+ millimetres. The volume is first brought to
the closest canonical RAS+ axis order (nibabel's ``io_orientation``, the same choice as
``as_closest_canonical``: axes are only permuted and flipped, never resampled), then laid out as
``(Z, H, W)``:

- Z runs inferior to superior (slice 0 is the most inferior axial slice),
- rows (H) run anterior to posterior (the top row is anterior),
- columns (W) run from the patient's right to their left (radiological convention: the
  patient's right is on the left of the image).

That is how an axial DICOM series with the usual ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``
reads in :mod:`gateway.readers.series`, so a model sees the same picture from a NIfTI conversion
of a series as from the series itself. Oblique volumes get the closest axis-aligned
orientation, without interpolation.

Values: ``scl_slope``/``scl_inter`` applied (integer slope and intercept keep an integer dtype,
otherwise float32). ``hounsfield`` is a heuristic, since NIfTI does not record the modality: True
when ``descrip`` names CT (the word ``CT``) or the scaled minimum is at most -900, the air of a
CT (-1000 HU) that MR, PET and normalised intensities do not reach.

A 4-D file with more than one volume is refused: which volume to send is the client's choice.
"""

from __future__ import annotations

import gzip
import io
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.fileholders import FileHolder
from nibabel.orientations import apply_orientation, io_orientation

from gateway.errors import ApiError, UnreadableFile, UnsupportedFileType, UnsupportedImage
from gateway.inference import Upload
from gateway.readers.base import ImageSet, finite_range, unreadable
from gateway.readers.limits import VoxelBudget
from gateway.readers.matching import FileEntries
from gateway.readers.stack import StackBuilder, one_file_set, require_one_slice, same_size

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_MAGICS = (b"n+1\x00",)
_NIFTI1_PAIR_MAGIC = b"ni1\x00"
_NIFTI2_MAGIC = b"n+2\x00\r\n\x1a\n"
_NIFTI2_PAIR_MAGIC = b"ni2\x00\r\n\x1a\n"
_HEAD_BYTES = 1024

HOUNSFIELD_MINIMUM = -900.0
"""A scaled minimum at or below this makes a volume CT (air is -1000 HU)."""

_CT_WORD = re.compile(rb"\bCT\b")
_UNIT_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}


@dataclass(frozen=True)
class NiftiHeader:
    upload: Upload
    stored_shape: tuple[int, int, int]
    """The voxel array's shape as stored (trailing axes of length 1 dropped)."""
    shape: tuple[int, int, int]
    """``(Z, H, W)`` after orientation."""
    spacing: tuple[float, float, float]
    ornt: npt.NDArray[np.float64]
    """nibabel's orientation: stored axes to RAS+."""
    ct_description: bool


@dataclass(frozen=True)
class NiftiVolume:
    pixels: npt.NDArray[Any]
    hounsfield: bool
    spacing: tuple[float, float, float]


def read_header(upload: Upload, budget: VoxelBudget) -> NiftiHeader:
    """The volume's oriented shape and spacing, checked against ``budget``."""
    with _image(upload) as image, _boundary(upload.file_name, "its header values are unusable"):
        header = image.header
        shape = _spatial_shape(upload.file_name, tuple(int(n) for n in header.get_data_shape()))
        affine = np.asarray(image.affine, dtype=np.float64)
        if not np.isfinite(affine).all():
            raise UnreadableFile(
                f"'{upload.file_name}' has an affine (sform/qform) with NaN or infinite values: "
                "its axes cannot be oriented",
                details={"file_name": upload.file_name},
            )
        ornt = io_orientation(affine)
        if np.isnan(ornt).any():
            raise UnreadableFile(
                f"'{upload.file_name}' has a degenerate affine (sform/qform): its axes cannot be "
                "oriented",
                details={"file_name": upload.file_name},
            )
        unit = _UNIT_MM.get(_spatial_unit(header), 1.0)
        sizes = np.linalg.norm(affine[:3, :3], axis=0) * unit
        ras_shape, ras_sizes = [0, 0, 0], [0.0, 0.0, 0.0]
        for axis, (target, _) in enumerate(ornt):
            ras_shape[int(target)] = shape[axis]
            ras_sizes[int(target)] = float(sizes[axis])
        descrip = np.asarray(header["descrip"]).tobytes()
    budget.claim(upload.file_name, ras_shape[1], ras_shape[0], ras_shape[2])
    return NiftiHeader(
        upload=upload,
        stored_shape=shape,
        shape=(ras_shape[2], ras_shape[1], ras_shape[0]),
        spacing=(ras_sizes[2], ras_sizes[1], ras_sizes[0]),
        ornt=ornt,
        ct_description=bool(_CT_WORD.search(descrip)),
    )


def read_volume(header: NiftiHeader) -> NiftiVolume:
    """Decode, orient (see the module's docstring) and scale the volume."""
    name = header.upload.file_name
    with _image(header.upload) as image, _boundary(name, "its voxel data cannot be read"):
        # nibabel moves scl_slope/scl_inter from the header into the array proxy on load.
        slope, intercept = float(image.dataobj.slope), float(image.dataobj.inter)
        raw = np.asanyarray(image.dataobj.get_unscaled())
        _verify_stream(image)
    if raw.dtype.fields is not None or np.iscomplexobj(raw):
        raise UnsupportedImage(
            f"'{name}' holds {raw.dtype} voxels; only real scalar volumes are supported",
            details={"file_name": name},
        )
    ras = apply_orientation(raw.reshape(header.stored_shape), header.ornt)
    pixels = _scaled(ras.transpose(2, 1, 0)[:, ::-1, ::-1], slope, intercept)
    floating = np.issubdtype(pixels.dtype, np.floating)
    if floating:
        # An infinite voxel is treated like NaN: it has no intensity to compare or scale.
        np.copyto(pixels, np.float32(np.nan), where=np.isinf(pixels))
    if pixels.size == 0:
        hounsfield = header.ct_description
    else:
        low = finite_range(pixels)[0] if floating else float(pixels.min())
        hounsfield = header.ct_description or low <= HOUNSFIELD_MINIMUM
    return NiftiVolume(pixels=pixels, hounsfield=hounsfield, spacing=header.spacing)


def _verify_stream(image: Any) -> None:
    """Read a gzip'ed file to its end, so that its CRC-32 and length trailer (RFC 1952) are
    checked: a flipped bit in the voxels decompresses without complaint, into garbage a model
    would compute on. ``gzip`` checks the trailer only when a read reaches it."""
    stream = image.file_map["image"].fileobj
    if isinstance(stream, gzip.GzipFile):
        while stream.read(1 << 20):
            pass


@contextmanager
def _image(upload: Upload) -> Iterator[Any]:
    """The NIfTI image over an open file: nibabel picks formats by extension, we by content."""
    name = upload.file_name
    with upload.path.open("rb") as raw_file:
        gzipped = raw_file.read(2) == b"\x1f\x8b"
        raw_file.seek(0)
        f: io.BufferedIOBase = gzip.GzipFile(fileobj=raw_file, mode="rb") if gzipped else raw_file
        try:
            version = nifti_version(name, f.read(540))
            f.seek(0)
            image_class = nib.Nifti2Image if version == 2 else nib.Nifti1Image
            holder = FileHolder(fileobj=f)
            file_map = {"header": holder, "image": holder}
            image = image_class.from_file_map(file_map)
        except ApiError:
            raise
        except Exception as exc:  # nibabel's boundary: see _boundary
            raise unreadable(name, "NIfTI file", "its header cannot be parsed", exc) from exc
        yield image


@contextmanager
def _boundary(file_name: str, what: str) -> Iterator[None]:
    """Whatever nibabel or zlib raise on a file's bytes or header values (an IndexError for a
    negative dim, an OverflowError for an infinite vox_offset, a zlib.error for a damaged
    stream) makes the file unreadable: 422 naming it, never a 500. The gateway's own errors
    pass through."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:
        raise unreadable(file_name, "NIfTI file", what, exc) from exc


def _spatial_unit(header: Any) -> str:
    """The spatial unit's name; an unknown code (nibabel raises) is read as millimetres, the
    NIfTI default, like the missing one."""
    try:
        return str(header.get_xyzt_units()[0])
    except (KeyError, ValueError):
        return "mm"


def _spatial_shape(file_name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    extra = shape[3:]
    if any(n > 1 for n in extra):
        raise UnsupportedImage(
            f"'{file_name}' is a {len(shape)}-D NIfTI of shape {shape}: "
            f"{int(np.prod(extra))} volumes; send one 3-D volume",
            details={"file_name": file_name, "shape": list(shape)},
        )
    spatial = (*shape[:3], 1, 1)[:3]
    return spatial[0], spatial[1], spatial[2]


def _scaled(view: npt.NDArray[Any], slope: float, intercept: float) -> Any:
    """A C-ordered, native-endian copy of ``view`` with scl_slope/scl_inter applied.

    One copy, scaled in place: integer slope and intercept keep an integer dtype (int16, else
    int32) when the scaled range fits, anything else is float32.
    """
    dtype = view.dtype.newbyteorder("=")
    if dtype == np.float64:
        dtype = np.dtype(np.float32)
    if slope == 1 and intercept == 0:
        return view.astype(dtype, order="C")
    dtype = np.dtype(np.float32)
    if slope.is_integer() and intercept.is_integer() and np.issubdtype(view.dtype, np.integer):
        ends = [int(view.min()) * int(slope) + int(intercept)] if view.size else [0]
        ends.append(int(view.max()) * int(slope) + int(intercept) if view.size else 0)
        for candidate in (np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= min(ends) and max(ends) <= info.max:
                dtype = np.dtype(candidate)
                break
    scaled = view.astype(dtype, order="C")
    scaled *= dtype.type(slope)
    scaled += dtype.type(intercept)
    return scaled


def sniff(head: bytes, upload: Upload) -> bool:
    """A single-file NIfTI-1 or NIfTI-2 header, gzipped or not."""
    if head.startswith(_GZIP_MAGIC):
        head = _gunzip_head(upload)
    return nifti_version(upload.file_name, head) is not None


def read_file(pair: FileEntries, budget: VoxelBudget) -> ImageSet:
    """One NIfTI volume (or image), with its entries."""
    volume = read_volume(read_header(pair.upload, budget))
    return one_file_set(pair, volume.pixels, volume.hounsfield, volume.spacing, None)


def read_stack(pairs: Sequence[FileEntries], budget: VoxelBudget) -> ImageSet:
    """Several 2-D NIfTI files, one slice each, in ``index`` order."""
    headers = [read_header(pair.upload, budget) for pair in pairs]
    for header in headers:
        require_one_slice(header.upload.file_name, header.shape[0], len(pairs))
    same_size([(h.upload.file_name, h.shape[1:]) for h in headers])
    builder = StackBuilder(len(headers))
    hounsfield = True
    for z, header in enumerate(headers):
        volume = read_volume(header)
        hounsfield = hounsfield and volume.hounsfield
        builder.put(z, volume.pixels[0], header.upload.file_name)
    return ImageSet(
        pixels=builder.result(),
        hounsfield=hounsfield,
        spacing=headers[0].spacing,
        slice_images=[pair.entries[0] for pair in pairs],
    )


def nifti_version(file_name: str, header: bytes) -> int | None:
    """1 or 2 for a single-file NIfTI header, None for anything else.

    The header is little- or big-endian; ``sizeof_hdr`` (348 or 540) tells which. A header of a
    ``.hdr``/``.img`` pair is refused by name: the image half cannot travel in the same file.
    """
    if len(header) < 348:
        return None
    for order in "<>":
        (size,) = struct.unpack(f"{order}i", header[:4])
        if size == 348 and header[344:348] in _NIFTI1_MAGICS:
            return 1
        if size == 540 and header[4:12] == _NIFTI2_MAGIC:
            return 2
        if (size == 348 and header[344:348] == _NIFTI1_PAIR_MAGIC) or (
            size == 540 and header[4:12] == _NIFTI2_PAIR_MAGIC
        ):
            raise UnsupportedFileType(
                f"'{file_name}' is the header of a NIfTI .hdr/.img pair; send the volume as one "
                ".nii or .nii.gz file",
                details={"file_name": file_name},
            )
    return None


def _gunzip_head(upload: Upload) -> bytes:
    """The first bytes of a gzip file's content, enough for a NIfTI-2 header."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    head = b""
    with upload.path.open("rb") as f:
        while len(head) < _HEAD_BYTES and (chunk := f.read(64 * 1024)):
            try:
                head += inflater.decompress(chunk, _HEAD_BYTES - len(head))
            except zlib.error as exc:
                raise UnreadableFile(
                    f"'{upload.file_name}' is a corrupt gzip stream: {exc}",
                    details={"file_name": upload.file_name},
                ) from exc
    return head
