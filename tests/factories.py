"""Test inputs made in code: DICOM series, shipped sample files, uploads as the gateway gets them.

Used by the readers' tests, the end-to-end tests and the benchmark. Nothing is downloaded: a CT
series is written slice by slice with pydicom from a volume of Hounsfield units, with the
attributes a scanner writes (CT Image Storage, rescale, position, orientation, spacing), so the
gateway reads it exactly as it would read a scanner's files. UIDs derive from ``seed``: the same
call writes the same files. Sample files come only from what pydicom and nibabel ship in their
packages (:func:`pydicom_file`, :func:`nibabel_file`), never from pydicom's download cache.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom.data
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from aicoco import AiImage
from gateway.inference import Upload

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""ImageOrientationPatient of an axial slice: rows along +x (patient left), columns along +y."""
CT_INTERCEPT = -1024


def slice_normal(orientation: Sequence[float]) -> npt.NDArray[np.float64]:
    """The unit normal (row cosines x column cosines) that a series is ordered along."""
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    unit: npt.NDArray[np.float64] = normal / np.linalg.norm(normal)
    return unit


def dicom_dataset(
    pixels: npt.NDArray[np.integer],
    *,
    modality: str = "OT",
    photometric: str = "MONOCHROME2",
    seed: int = 0,
    instance: int = 1,
    series_uid: str | None = None,
    bits_stored: int | None = None,
    **attributes: object,
) -> FileDataset:
    """An uncompressed DICOM image holding ``pixels``.

    ``pixels`` is ``(H, W)``, ``(frames, H, W)`` (set ``NumberOfFrames`` in ``attributes``) or
    ``(..., 3)`` for RGB; its dtype sets BitsAllocated and PixelRepresentation. ``attributes``
    are set as DICOM keywords last (RescaleIntercept, ImagePositionPatient...).
    """
    color = photometric in ("RGB", "YBR_FULL")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = (
        CTImageStorage if modality == "CT" else SecondaryCaptureImageStorage
    )
    meta.MediaStorageSOPInstanceUID = _uid(seed, "instance", instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(seed, "study")
    ds.SeriesInstanceUID = series_uid or _uid(seed, "series")
    ds.FrameOfReferenceUID = _uid(seed, "frame")
    ds.Modality = modality
    ds.PatientID = "PHANTOM"
    ds.PatientName = "Phantom^Generated"
    ds.InstanceNumber = instance
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if color else pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def make_ct_series(
    directory: Path,
    hu_volume: npt.NDArray[np.integer],
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.7),
    *,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-180.0, -180.0, -300.0),
    shuffle: int | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``hu_volume`` ``(Z, H, W)`` as one CT file per slice; paths in slice (z) order.

    Slice z lies at ``origin + z * spacing[0] * normal``, so z increases along the slice normal,
    the order the readers restore. Stored values are ``HU + 1024`` (int16, RescaleIntercept
    -1024). With ``shuffle`` (a seed), file names are numbered in a random order so that sorting
    them by name does not give the slice order; InstanceNumber still does.
    """
    directory.mkdir(parents=True, exist_ok=True)
    depth = hu_volume.shape[0]
    numbers = np.arange(depth)
    if shuffle is not None:
        numbers = np.random.default_rng(shuffle).permutation(depth)
    normal = slice_normal(orientation)
    stored = (np.asarray(hu_volume) - CT_INTERCEPT).astype(np.int16)
    paths = []
    for z in range(depth):
        position = np.asarray(origin, float) + z * spacing[0] * normal
        ds = dicom_dataset(
            stored[z],
            modality="CT",
            seed=seed,
            instance=z + 1,
            RescaleIntercept=CT_INTERCEPT,
            RescaleSlope=1,
            RescaleType="HU",
            ImagePositionPatient=[round(float(v), 4) for v in position],
            ImageOrientationPatient=[round(float(v), 6) for v in orientation],
            PixelSpacing=[spacing[1], spacing[2]],
            SliceThickness=spacing[0],
            KVP=120,
        )
        path = directory / f"ct_{int(numbers[z]):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def phantom_hu(shape: tuple[int, int, int], seed: int = 0) -> npt.NDArray[np.int16]:
    """A CT-like volume: air, a water-density body, a denser sphere off centre."""
    depth, height, width = shape
    z, y, x = np.mgrid[0:depth, 0:height, 0:width].astype(np.float32)
    hu = np.full(shape, -1000, np.int16)
    body = ((y - height / 2) / (0.4 * height)) ** 2 + ((x - width / 2) / (0.45 * width)) ** 2 <= 1
    hu[body] = 40
    lesion = (
        ((z - 0.6 * depth) / max(0.2 * depth, 1)) ** 2
        + ((y - 0.4 * height) / (0.1 * height)) ** 2
        + ((x - 0.6 * width) / (0.1 * width)) ** 2
    ) <= 1
    hu[lesion] = 300
    noise = np.random.default_rng(seed).integers(-10, 11, shape, dtype=np.int16)
    return (hu + noise).astype(np.int16)


def _uid(seed: int, *parts: object) -> UID:
    return generate_uid(entropy_srcs=["aicoco-gateway-tests", str(seed), *map(str, parts)])


def pydicom_file(name: str) -> Path:
    """A sample file shipped inside the pydicom package (never one it would download)."""
    path = Path(pydicom.data.__file__).parent / "test_files" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not among pydicom's shipped test files")
    return path


def nibabel_file(name: str) -> Path:
    """A sample file shipped inside the nibabel package."""
    from nibabel.testing import data_path

    path = Path(str(data_path)) / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not among nibabel's shipped test files")
    return path


@dataclass
class RequestFiles:
    """Uploads as the HTTP layer hands them over: stored under opaque names in one folder.

    The stored name deliberately differs from the client's file name (and drops its
    extension), so readers must go by content and by ``Upload.file_name``, as in production.
    """

    directory: Path
    uploads: dict[str, Upload] = field(default_factory=dict)

    def add(self, file_name: str, content: bytes | Path) -> Upload:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"upload-{len(self.uploads):05d}"
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        else:
            path.write_bytes(content)
        upload = Upload(file_name=file_name, path=path, size=path.stat().st_size)
        self.uploads[file_name] = upload
        return upload

    def entries(self, names: Iterable[str] | None = None) -> list[AiImage]:
        """One entry per name (default: every upload, in the order added), index 0, 1, ..."""
        return [image_entry(name, i) for i, name in enumerate(names or list(self.uploads))]


def image_entry(file_name: str, index: int) -> AiImage:
    return AiImage(id=f"image-{index:05d}", file_name=file_name, index=index)


def chest_slice() -> npt.NDArray[np.uint8]:
    """An 8-bit lung-window rendering of a chest slice: a body with two dark lungs."""
    y, x = np.ogrid[0:512, 0:512]
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 240.0) ** 2 < 1
    lungs = body & ((((y - 250) / 120.0) ** 2 + ((np.abs(x - 256) - 110) / 70.0) ** 2) < 1)
    image = np.zeros((512, 512), dtype=np.uint8)
    image[body] = 200
    image[lungs] = 30
    return image


def chest_png() -> bytes:
    """:func:`chest_slice` as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(chest_slice()).save(buffer, format="PNG")
    return buffer.getvalue()


def chest_hu_plane() -> npt.NDArray[np.int16]:
    """One 512 x 512 axial plane in Hounsfield units: air around a body with two dark lungs,
    centred on rows 250 and columns 146 and 366."""
    y, x = np.ogrid[0:512, 0:512]
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 240.0) ** 2 < 1
    lungs = body & ((((y - 250) / 120.0) ** 2 + ((np.abs(x - 256) - 110) / 70.0) ** 2) < 1)
    plane = np.full((512, 512), -1000, dtype=np.int16)
    plane[body] = 40
    plane[lungs] = -850
    return plane
