"""One DICOM file: its header first (bounds, codec, geometry), then its frames.

Reading is in two steps so that a request is refused before any pixel is decoded: the header
(``dcmread`` with large values deferred, so the pixel bytes stay on disk) gives the dimensions
checked against the limits, the transfer syntax checked against the installed decoders, and the
geometry a series is ordered by. :func:`decode_frames` then decodes frame by frame into the
stack.

Values, in DICOM's own order of operations:

- Frames are decoded by pydicom 3 (``iter_pixels``) with its license-clean plugins: Pillow (JPEG
  baseline/extended 8-bit, JPEG 2000), pylibjpeg-openjpeg (JPEG 2000, HTJ2K), pyjpegls (JPEG-LS)
  and pydicom's own RLE. The GPL ``pylibjpeg-libjpeg`` is not used, so JPEG Lossless (process 14)
  and 12-bit JPEG Extended have no decoder here: 415 with the transfer syntax named.
- Colour: YBR_FULL and YBR_FULL_422 are converted to RGB by pydicom, JPEG 2000's YBR_RCT/ICT come
  out of the decoder as RGB, PALETTE COLOR goes through its lookup table; samples wider than
  8 bits are reduced to uint8 by dropping the low bits, because the stack's RGB is uint8.
- MONOCHROME1 (white is the minimum) is inverted within the stored bit range
  (``2**BitsStored - 1 - x``, or ``-1 - x`` when signed) so that higher is brighter, like
  MONOCHROME2 -- except when the values are Hounsfield units: those are physical quantities and
  MONOCHROME1 only says how to display them.
- The modality LUT: RescaleSlope/RescaleIntercept (from the top level or the enhanced
  multi-frame functional groups, per frame) or a Modality LUT Sequence. Integer slope and
  intercept give int16 (int32 if a frame's values do not fit), others float32. ``hounsfield``
  is True for Modality CT with a rescale, or RescaleType ``HU``.
- No VOI LUT or window is applied: the model's configured window does that.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGExtended12Bit,
)

from gateway.errors import (
    ApiError,
    ImageTooLarge,
    UnreadableFile,
    UnsupportedFileType,
    UnsupportedImage,
)
from gateway.inference import Upload
from gateway.readers.base import ImageSet, unreadable
from gateway.readers.codestream import declared_size
from gateway.readers.limits import VoxelBudget
from gateway.readers.matching import FileEntries
from gateway.readers.stack import StackBuilder, one_file_set, spacing

RAW_DICOM_SUFFIXES = (".dcm", ".dicom")

Frame = npt.NDArray[Any]

_DEFER_BYTES = 4096
"""Values larger than this stay on disk until decoded: 300 headers must not hold 300 images."""

_GRAY = ("MONOCHROME1", "MONOCHROME2")
_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
_PALETTE = "PALETTE COLOR"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_EIGHT_BIT_JPEG_PLUGINS = {"pillow"}
"""Pillow decodes JPEG Extended only at 8 bits; of the 12-bit decoders, pylibjpeg-libjpeg is GPL
(never installed here) and GDCM is not a dependency."""
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
"""VRs whose explicit-VR length field is 4 bytes (after 2 reserved), not 2."""

# Errors that malformed attribute values raise while the header is interpreted (pydicom
# converts values lazily, on access).
_DICOM_ERRORS = (
    InvalidDicomError,
    BytesLengthException,
    AttributeError,
    OverflowError,
    ValueError,
    RuntimeError,
    EOFError,
    OSError,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    NotImplementedError,
    zlib.error,
)


@dataclass(frozen=True)
class Rescale:
    slope: float
    intercept: float


@dataclass(frozen=True)
class DicomHeader:
    """What is known of one DICOM file before decoding: enough to check, order and allocate."""

    upload: Upload
    dataset: Dataset
    """The parsed attributes; the pixel data is deferred (read when decoded)."""
    rows: int
    columns: int
    frames: int
    photometric: str
    bits_stored: int
    signed: bool
    modality: str | None
    series_uid: str | None
    instance_number: int | None
    position: tuple[float, float, float] | None
    """ImagePositionPatient: the centre of the first voxel, mm (patient LPS)."""
    orientation: tuple[float, float, float, float, float, float] | None
    """ImageOrientationPatient: row then column direction cosines."""
    pixel_spacing: tuple[float, float] | None
    """(between rows, between columns), mm."""
    slice_spacing: float | None
    """Between frames (positions of a multi-frame file), else SpacingBetweenSlices or
    SliceThickness."""
    hounsfield: bool

    @property
    def file_name(self) -> str:
        return self.upload.file_name

    @property
    def is_color(self) -> bool:
        return self.photometric not in _GRAY


def read_header(upload: Upload, budget: VoxelBudget) -> DicomHeader:
    """Parse and check ``upload``'s header; its frames count against ``budget``."""
    name = upload.file_name
    _check_deflated_size(upload, budget)
    try:
        ds = pydicom.dcmread(upload.path, force=True, defer_size=_DEFER_BYTES)
    except Exception as exc:  # the parser's boundary: see decode_frames
        raise unreadable(name, "DICOM file", "its header cannot be parsed", exc) from exc
    try:
        _require_pixel_data(name, ds)
        return _parse(upload, ds, budget)
    except ApiError:
        raise
    except _DICOM_ERRORS as exc:
        raise unreadable(name, "DICOM file", "its image attributes are malformed", exc) from exc


def _check_codestreams(header: DicomHeader) -> None:
    """Refuse encapsulated frames whose codestream declares another size than Rows x Columns,
    before the decoder allocates for it (see :mod:`gateway.readers.codestream`)."""
    ds = header.dataset
    if not _transfer_syntax(ds).is_encapsulated or "PixelData" not in ds:
        return
    try:
        sizes = [
            declared_size(frame)
            for frame in generate_frames(ds.PixelData, number_of_frames=header.frames)
        ]
    except Exception as exc:  # pydicom's boundary, as in decode_frames
        raise unreadable(
            header.file_name, "DICOM file", "its encapsulated pixel data is malformed", exc
        ) from exc
    for i, size in enumerate(sizes):
        if size is not None and size != (header.rows, header.columns):
            raise UnreadableFile(
                f"'{header.file_name}' frame {i} is a compressed image of {size[0]} x {size[1]} "
                f"pixels where the header declares {header.rows} x {header.columns} (Rows x "
                "Columns): the file is damaged",
                details={"file_name": header.file_name, "frame": i},
            )


def _require_pixel_data(name: str, ds: Dataset) -> None:
    if any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        return
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if len(ds) == 0 or "Rows" in ds or sop_class.name.endswith("Image Storage"):
        raise UnreadableFile(
            f"'{name}' is a DICOM file without pixel data where an image was expected: the "
            "file is truncated or its pixel data element is missing",
            details={"file_name": name},
        )
    what = f"a {sop_class.name} object" if sop_class else "a DICOM dataset"
    raise UnsupportedImage(
        f"'{name}' is {what} without pixel data; send DICOM images",
        details={"file_name": name},
    )


def decode_frames(header: DicomHeader) -> Iterator[Frame]:
    """The file's frames in stored order, each ``(H, W)`` or ``(H, W, 3)`` uint8 RGB.

    Decoding loads the deferred pixel data into the header's dataset; it is dropped again at the
    end, so the encoded bytes of a series' files do not accumulate next to the decoded stack.
    """
    ds = header.dataset
    try:
        _check_codestreams(header)
        frames = iter_pixels(ds, as_rgb=True)
        for i in range(header.frames):
            try:
                frame = next(frames)
                if header.photometric == _PALETTE:
                    rgb = apply_color_lut(frame, ds)
                    converted = _to_uint8(rgb, 8 * rgb.dtype.itemsize)
                elif header.is_color:
                    converted = _to_uint8(frame, header.bits_stored)
                else:
                    converted = _gray(header, frame, i)
            except StopIteration:
                raise UnreadableFile(
                    f"'{header.file_name}' declares {header.frames} frames but holds only {i}",
                    details={"file_name": header.file_name},
                ) from None
            except ApiError:
                raise
            except Exception as exc:
                # The boundary: whatever the decoder or a lookup table raises on this file's
                # bytes or values, the file is unreadable. Our own code's bugs stay outside it.
                raise unreadable(
                    header.file_name, "DICOM file", f"frame {i} cannot be decoded", exc
                ) from exc
            yield converted
    finally:
        for keyword in _PIXEL_KEYWORDS:
            if keyword in ds:
                del ds[keyword]


def _parse(upload: Upload, ds: Dataset, budget: VoxelBudget) -> DicomHeader:
    """The header's values, claimed against ``budget`` before any work that scales with them."""
    name = upload.file_name
    transfer_syntax = _transfer_syntax(ds)
    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    _check_decoder(name, transfer_syntax, bits_stored)
    for keyword in ("Rows", "Columns"):
        if ds.get(keyword) in (None, ""):
            raise ValueError(f"the pixel data has no {keyword} attribute")
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if not photometric and samples == 1:
        # Old ACR-NEMA style files omit it; grayscale with higher = brighter is their meaning.
        photometric = ds.PhotometricInterpretation = "MONOCHROME2"
    if photometric not in (*_GRAY, *_COLOR, _PALETTE):
        raise UnsupportedImage(
            f"'{name}' has PhotometricInterpretation '{photometric}'; supported are "
            f"{', '.join((*_GRAY, *_COLOR, _PALETTE))}",
            details={"file_name": name},
        )
    expected_samples = 3 if photometric in _COLOR else 1
    if samples != expected_samples:
        raise UnsupportedImage(
            f"'{name}' has {samples} samples per pixel for {photometric} (expected "
            f"{expected_samples})",
            details={"file_name": name},
        )
    frames = _number_of_frames(ds)
    rows, columns = int(ds.Rows), int(ds.Columns)
    budget.claim(name, rows, columns, frames)
    _fill_pixel_description(ds, samples, bits_stored)
    modality = str(ds.Modality).strip().upper() if ds.get("Modality") else None
    rescaled = "ModalityLUTSequence" in ds or _rescale(ds, 0) is not None
    hounsfield = (modality == "CT" and rescaled) or (
        str(ds.get("RescaleType", "")).strip().upper() == "HU"
    )
    orientation = _orientation(ds)
    position = _floats(ds, "ImagePositionPatient", 3)
    if position is None:
        # Enhanced CT/MR: the first frame's Plane Position (Patient), C.7.6.16.2.3.
        position = _in_groups(ds, "PlanePositionSequence", "ImagePositionPatient", 3)
    pixel_spacing = _pixel_spacing(ds)
    # Every frame's rescale, now: a NaN slope in frame 700 is the file's fault, found before
    # anything is decoded. As many as the file holds groups for (NumberOfFrames may lie).
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or ()
    for frame in range(max(1, min(frames, len(per_frame)))):
        _rescale(ds, frame)
    return DicomHeader(
        upload=upload,
        dataset=ds,
        rows=rows,
        columns=columns,
        frames=frames,
        photometric=photometric,
        bits_stored=bits_stored,
        signed=int(ds.get("PixelRepresentation", 0)) == 1,
        modality=modality,
        series_uid=str(ds.SeriesInstanceUID) if ds.get("SeriesInstanceUID") else None,
        instance_number=_optional_int(ds, "InstanceNumber"),
        position=(position[0], position[1], position[2]) if position else None,
        orientation=orientation,
        pixel_spacing=pixel_spacing,
        slice_spacing=_frame_spacing(ds, frames, orientation) or _declared_slice_spacing(ds),
        hounsfield=hounsfield,
    )


def _fill_pixel_description(ds: Dataset, samples: int, bits_stored: int) -> None:
    """Write the defaults this reader assumes into the dataset, for the decoder to use too.

    Files from old or careless writers omit Image Pixel attributes that PS3.3 C.7.6.3 makes
    Type 1 (SamplesPerPixel, BitsStored, PixelRepresentation...). The reader's defaults are the
    only sensible readings (one sample, unsigned, all allocated bits stored); without them the
    decoder fails with whatever exception it meets first.
    """
    if ds.get("SamplesPerPixel") in (None, ""):
        ds.SamplesPerPixel = samples
    if ds.get("BitsAllocated") in (None, ""):
        ds.BitsAllocated = 8 if bits_stored <= 8 else 16 if bits_stored <= 16 else 32
    if ds.get("BitsStored") in (None, ""):
        ds.BitsStored = bits_stored
    if ds.get("HighBit") in (None, ""):
        ds.HighBit = int(ds.BitsStored) - 1
    if ds.get("PixelRepresentation") in (None, ""):
        ds.PixelRepresentation = 0
    if samples > 1 and ds.get("PlanarConfiguration") in (None, ""):
        ds.PlanarConfiguration = 0


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax; for a dataset without file meta, the encoding it was read in."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and file_meta.get("TransferSyntaxUID"):
        return UID(str(file_meta.TransferSyntaxUID))
    implicit, little = ds.original_encoding
    syntax = (
        ImplicitVRLittleEndian
        if implicit
        else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    )
    if file_meta is None:
        ds.file_meta = file_meta = FileMetaDataset()
    file_meta.TransferSyntaxUID = syntax
    return syntax


def _check_decoder(file_name: str, transfer_syntax: UID, bits_stored: int) -> None:
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise UnsupportedFileType(
            f"'{file_name}' uses the transfer syntax {_syntax_name(transfer_syntax)}, which this "
            "gateway cannot decode",
            details={"file_name": file_name, "transfer_syntax": str(transfer_syntax)},
        ) from None
    twelve_bit_jpeg = transfer_syntax == JPEGExtended12Bit and bits_stored > 8
    if not decoder.is_available or (
        twelve_bit_jpeg and set(decoder.available_plugins) <= _EIGHT_BIT_JPEG_PLUGINS
    ):
        raise UnsupportedFileType(
            f"'{file_name}' uses the transfer syntax {_syntax_name(transfer_syntax)}; this gateway "
            f"has no license-compatible decoder for it{' at 12 bits' if twelve_bit_jpeg else ''} "
            "(supported: uncompressed, RLE, 8-bit JPEG baseline/extended, JPEG-LS, JPEG 2000)",
            details={"file_name": file_name, "transfer_syntax": str(transfer_syntax)},
        )


def _syntax_name(transfer_syntax: UID) -> str:
    return f"'{transfer_syntax.name}' ({transfer_syntax})"


def _check_deflated_size(upload: Upload, budget: VoxelBudget) -> None:
    """Refuse a deflated dataset that inflates past one image's worth of bytes.

    pydicom inflates a Deflated Explicit VR file whole, before any attribute can be checked: a
    zlib stream of zeros can grow a thousandfold. The bound is the largest image the limits
    allow at 8 bytes a pixel (3 samples of 16 bits, or a float64), plus room for attributes.
    """
    try:
        meta = read_file_meta_info(upload.path)
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # a peek only: dcmread's boundary reports a damaged file meta group
        return
    if not deflated:
        return
    bound = budget.limits.max_pixels_per_image * 8 + (1 << 20)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    with upload.path.open("rb") as f:
        f.seek(_dataset_offset(f))
        while (chunk := f.read(1 << 20)) and inflated <= bound:
            while chunk and inflated <= bound:
                try:
                    inflated += len(inflater.decompress(chunk, 1 << 24))
                except zlib.error as exc:
                    raise unreadable(
                        upload.file_name, "DICOM file", "its deflated data is corrupt", exc
                    ) from exc
                chunk = inflater.unconsumed_tail
    if inflated > bound:
        raise ImageTooLarge(
            f"'{upload.file_name}' is a deflated DICOM dataset that inflates past {bound:,} "
            "bytes, more than one image within the limits",
            details={"file_name": upload.file_name},
        )


def _dataset_offset(f: BinaryIO) -> int:
    """Where the dataset starts: after the preamble, ``DICM`` and the (0002,xxxx) elements.

    The file meta group is always explicit VR little endian; walking it element by element does
    not depend on its optional group length.
    """
    offset = 132
    f.seek(offset)
    while len(head := f.read(8)) == 8 and head[:2] == b"\x02\x00":
        if head[4:6] in _LONG_VRS:
            (length,) = struct.unpack("<I", f.read(4))
            offset += 12 + length
        else:
            (length,) = struct.unpack("<H", head[6:8])
            offset += 8 + length
        f.seek(offset)
    return offset


def _number_of_frames(ds: Dataset) -> int:
    frames = _optional_int(ds, "NumberOfFrames")
    return 1 if frames is None else frames


def _optional_int(ds: Dataset, keyword: str) -> int | None:
    """An IS attribute; None when absent or empty (both common), ValueError when not a number."""
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return None
    return int(value)


def _rescale(ds: Dataset, frame: int) -> Rescale | None:
    """The frame's rescale: top level, else the enhanced per-frame then shared groups."""
    found = _rescale_in(ds)
    if found is not None:
        return found
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        found = _rescale_in_group(per_frame[frame])
        if found is not None:
            return found
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        return _rescale_in_group(shared[0])
    return None


def _rescale_in_group(group: Dataset) -> Rescale | None:
    sequence = group.get("PixelValueTransformationSequence")
    return _rescale_in(sequence[0]) if sequence else None


def _rescale_in(ds: Dataset) -> Rescale | None:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None and intercept is None:
        return None
    rescale = Rescale(
        float(slope) if slope not in (None, "") else 1.0,
        float(intercept) if intercept not in (None, "") else 0.0,
    )
    if not (math.isfinite(rescale.slope) and math.isfinite(rescale.intercept)):
        raise ValueError(f"RescaleSlope/RescaleIntercept are not finite: {rescale}")
    return rescale


def _floats(ds: Dataset, keyword: str, count: int) -> list[float] | None:
    """A multi-valued numeric attribute, None when absent or empty; ValueError when malformed."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    values = [float(v) for v in items]
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{keyword} must be {count} finite numbers, got {value!r}")
    return values


def _orientation(ds: Dataset) -> tuple[float, float, float, float, float, float] | None:
    values = _floats(ds, "ImageOrientationPatient", 6)
    if values is None:
        values = _in_groups(ds, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
    if values is None:
        return None
    row, col = np.array(values[:3]), np.array(values[3:])
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01:
        raise ValueError(f"ImageOrientationPatient is not two unit vectors: {values}")
    return (values[0], values[1], values[2], values[3], values[4], values[5])


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    values = _floats(ds, "PixelSpacing", 2)
    if values is None:
        values = _in_groups(ds, "PixelMeasuresSequence", "PixelSpacing", 2)
    if values is None:
        return None
    if values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"PixelSpacing must be positive, got {values}")
    return values[0], values[1]


def _in_groups(ds: Dataset, sequence: str, keyword: str, count: int) -> list[float] | None:
    """An attribute of the enhanced multi-frame shared functional group, else the first frame's."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        group_sequence = ds.get(groups)
        if group_sequence:
            items = group_sequence[0].get(sequence)
            if items:
                values = _floats(items[0], keyword, count)
                if values is not None:
                    return values
    return None


def _frame_spacing(ds: Dataset, frames: int, orientation: tuple[float, ...] | None) -> float | None:
    """The median distance between a multi-frame file's frame positions along the normal."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if frames < 2 or orientation is None or not per_frame or len(per_frame) != frames:
        return None
    positions = []
    for group in per_frame:
        plane = group.get("PlanePositionSequence")
        position = _floats(plane[0], "ImagePositionPatient", 3) if plane else None
        if position is None:
            return None
        positions.append(position)
    normal = np.cross(orientation[:3], orientation[3:])
    steps = np.abs(np.diff(np.asarray(positions) @ normal))
    spacing = float(np.median(steps))
    return spacing if spacing > 0 else None


def _declared_slice_spacing(ds: Dataset) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value is None or value == "":
            value = _group_value(ds, keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return None


def _group_value(ds: Dataset, keyword: str) -> Any:
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        measures = shared[0].get("PixelMeasuresSequence")
        if measures:
            return measures[0].get(keyword)
    return None


def _gray(header: DicomHeader, frame: Frame, index: int) -> Frame:
    if not frame.dtype.isnative:
        frame = frame.astype(frame.dtype.newbyteorder("="))
    if frame.dtype == np.float64:
        frame = frame.astype(np.float32)
    if header.photometric == "MONOCHROME1" and not header.hounsfield:
        frame = _invert(frame, header.bits_stored, header.signed)
    if "ModalityLUTSequence" in header.dataset:
        return np.asarray(apply_modality_lut(frame, header.dataset), dtype=np.float32)
    rescale = _rescale(header.dataset, index)
    if rescale is None or (rescale.slope == 1 and rescale.intercept == 0):
        return frame
    return _apply_rescale(frame, rescale)


def _invert(frame: Frame, bits_stored: int, signed: bool) -> Frame:
    """Flip a MONOCHROME1 frame within its stored range so that higher is brighter."""
    if np.issubdtype(frame.dtype, np.floating):
        return np.asarray(frame.max() + frame.min() - frame, dtype=frame.dtype)
    if signed:
        return np.invert(frame)
    top = min((1 << bits_stored) - 1, int(np.iinfo(frame.dtype).max))
    return np.asarray(top - np.minimum(frame, top), dtype=frame.dtype)


def _apply_rescale(frame: Frame, rescale: Rescale) -> Frame:
    """Slope and intercept; int16 when the result is integral and fits, else int32 or float32."""
    integral = rescale.slope.is_integer() and rescale.intercept.is_integer()
    if integral and np.issubdtype(frame.dtype, np.integer):
        values = frame.astype(np.int64) * int(rescale.slope) + int(rescale.intercept)
        low, high = int(values.min()), int(values.max())
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return values.astype(dtype)
    out = frame.astype(np.float32)
    out *= np.float32(rescale.slope)
    out += np.float32(rescale.intercept)
    return out


def _to_uint8(frame: Frame, bits: int) -> Frame:
    """RGB samples as uint8: wider samples keep their top 8 significant bits."""
    if frame.dtype == np.uint8:
        return frame
    shift = max(bits - 8, 0)
    return (np.asarray(frame, dtype=np.uint64) >> shift).clip(0, 255).astype(np.uint8)


def sniff(head: bytes, upload: Upload) -> bool:
    """The ``DICM`` prefix after the 128-byte preamble (PS3.10 section 7.1)."""
    return head[128:132] == b"DICM"


def claims_raw(upload: Upload) -> bool:
    """A dataset written without preamble and prefix (old ACR-NEMA style): nothing in its first
    bytes says so, so it is tried only when its name says DICOM, and accepted only if pydicom
    finds image rows, columns and pixel data in it."""
    return upload.file_name.lower().endswith(RAW_DICOM_SUFFIXES) and _is_raw_dicom(upload.path)


def read_file(pair: FileEntries, budget: VoxelBudget) -> ImageSet:
    """One DICOM file of any number of frames, with its entries."""
    upload = pair.upload
    header = read_header(upload, budget)
    builder = StackBuilder(header.frames)
    for z, frame in enumerate(decode_frames(header)):
        builder.put(z, frame, upload.file_name)
    pixels = builder.result()
    grid = spacing(header.pixel_spacing, header.slice_spacing, pixels.shape[0])
    return one_file_set(pair, pixels, header.hounsfield, grid, header.modality)


def _is_raw_dicom(path: Path) -> bool:
    """Whether a file without the ``DICM`` prefix parses as a DICOM image dataset."""
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=1024)
    except Exception:  # whatever the parser raises on these bytes: not a raw DICOM dataset
        return False
    return "Rows" in ds and "Columns" in ds and "PixelData" in ds
