"""NIfTI volumes: the documented orientation, scaling, the CT heuristic, broken and huge files."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gateway.errors import (
    ImageTooLarge,
    InvalidInput,
    UnreadableFile,
    UnsupportedFileType,
    UnsupportedImage,
)
from gateway.readers import ImageSet, ReadLimits, read_images
from tests.factories import (
    RequestFiles,
    image_entry,
    make_ct_series,
    nibabel_file,
    phantom_hu,
)

LIMITS = ReadLimits(max_pixels_per_image=100_000_000, max_total_voxels=1_500_000_000)


def nifti_bytes(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    version: int = 1,
    gz: bool = False,
    slope: float | None = None,
    intercept: float | None = None,
    descrip: str = "",
) -> bytes:
    """A single-file NIfTI, written by hand so that the scaling is stored exactly as given
    (nibabel's writer recomputes scl_slope/scl_inter for the array it is handed)."""
    image_class = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    header = image_class(data, affine).header  # type: ignore[no-untyped-call]
    header.set_data_dtype(data.dtype)
    header["scl_slope"] = np.nan if slope is None else slope
    header["scl_inter"] = np.nan if intercept is None else intercept
    header["descrip"] = descrip.encode()
    offset = len(header.binaryblock) + 4
    header["vox_offset"] = offset
    raw = header.binaryblock + b"\0" * 4 + data.tobytes(order="F")
    return gzip.compress(raw) if gz else raw


def read(tmp_path: Path, content: bytes | Path, name: str = "volume.nii.gz") -> ImageSet:
    files = RequestFiles(tmp_path / "uploads")
    files.add(name, content)
    return read_images(files.entries(), files.uploads, LIMITS)


def marked_ras_volume() -> np.ndarray:
    """An RAS-stored (i: left->right, j: posterior->anterior, k: inferior->superior) volume with
    distinct values at known anatomical corners."""
    data = np.zeros((4, 5, 6), np.int16)
    data[3, 0, 0] = 1  # right, posterior, inferior
    data[0, 4, 0] = 2  # left, anterior, inferior
    data[0, 0, 5] = 3  # left, posterior, superior
    return data


def check_orientation(pixels: np.ndarray) -> None:
    """Z inferior->superior, rows anterior->posterior, columns patient right->left."""
    z, h, w = pixels.shape
    assert (z, h, w) == (6, 5, 4)
    assert pixels[0, h - 1, 0] == 1  # inferior, posterior (bottom row), right (left column)
    assert pixels[0, 0, w - 1] == 2  # inferior, anterior (top row), left (right column)
    assert pixels[z - 1, h - 1, w - 1] == 3  # superior, posterior, left
    assert np.count_nonzero(pixels) == 3


def test_ras_volume_in_the_documented_orientation(tmp_path: Path) -> None:
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    image = read(tmp_path, nifti_bytes(marked_ras_volume(), affine))
    check_orientation(image.pixels)
    assert image.pixels.dtype == np.int16
    assert image.pixels.flags.c_contiguous
    assert image.spacing == pytest.approx((2.0, 0.7, 0.5))
    assert not image.hounsfield
    assert image.modality is None


def test_lps_stored_volume_comes_out_the_same(tmp_path: Path) -> None:
    lps = marked_ras_volume()[::-1, ::-1, :]
    affine = np.diag([-0.5, -0.7, 2.0, 1.0])
    image = read(tmp_path, nifti_bytes(np.ascontiguousarray(lps), affine))
    check_orientation(image.pixels)


def test_sagittally_stored_volume_comes_out_the_same(tmp_path: Path) -> None:
    # Stored axes: (superior->inferior, anterior->posterior, left->right).
    stored = np.ascontiguousarray(marked_ras_volume().transpose(2, 1, 0)[::-1, ::-1, :])
    affine = np.array([[0, 0, 0.5, 0], [0, -0.7, 0, 0], [-2.0, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    image = read(tmp_path, nifti_bytes(stored, affine), name="sagittal.nii")
    check_orientation(image.pixels)
    assert image.spacing == pytest.approx((2.0, 0.7, 0.5))


def test_nifti_conversion_of_a_series_reads_like_the_series(tmp_path: Path) -> None:
    hu = phantom_hu((5, 12, 10))
    spacing, origin = (2.5, 0.8, 0.6), (-20.0, -30.0, 40.0)
    paths = make_ct_series(tmp_path / "series", hu, spacing, origin=origin)
    files = RequestFiles(tmp_path / "dicom")
    for path in paths:
        files.add(path.name, path)
    series = read_images(files.entries(), files.uploads, LIMITS)
    # The same voxels in NIfTI: voxel (i, j, k) = (column, row, slice), LPS flipped to RAS.
    affine = np.array(
        [
            [-spacing[2], 0, 0, -origin[0]],
            [0, -spacing[1], 0, -origin[1]],
            [0, 0, spacing[0], origin[2]],
            [0, 0, 0, 1],
        ]
    )
    stored = np.ascontiguousarray(hu.transpose(2, 1, 0))
    volume = read(tmp_path, nifti_bytes(stored, affine, gz=True))
    np.testing.assert_array_equal(volume.pixels, series.pixels)
    assert volume.spacing == pytest.approx(series.spacing)
    assert volume.hounsfield and series.hounsfield


def test_scaling_with_integer_slope_and_intercept_stays_int16(tmp_path: Path) -> None:
    stored = np.array([[[0, 1000], [1064, 2000]]], np.int16).transpose(1, 2, 0)
    image = read(tmp_path, nifti_bytes(stored, np.eye(4), slope=1, intercept=-1024))
    assert image.pixels.dtype == np.int16
    assert sorted(image.pixels.ravel().tolist()) == [-1024, -24, 40, 976]
    assert image.hounsfield


def test_fractional_scaling_gives_float32(tmp_path: Path) -> None:
    stored = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    image = read(tmp_path, nifti_bytes(stored, np.eye(4), slope=0.5, intercept=3))
    assert image.pixels.dtype == np.float32
    assert sorted(image.pixels.ravel().tolist()) == [3 + v / 2 for v in range(8)]
    assert not image.hounsfield


def test_ct_description_marks_hounsfield(tmp_path: Path) -> None:
    stored = np.zeros((2, 2, 2), np.int16)
    assert read(tmp_path, nifti_bytes(stored, np.eye(4), descrip="CT chest")).hounsfield
    assert not read(tmp_path / "b", nifti_bytes(stored, np.eye(4), descrip="CTA-free")).hounsfield


def test_shipped_anatomical_mr_is_not_ct(tmp_path: Path) -> None:
    image = read(tmp_path, nibabel_file("anatomical.nii"), name="anatomical.nii")
    source = nib.load(nibabel_file("anatomical.nii"))
    canonical = np.asanyarray(nib.as_closest_canonical(source).dataobj)
    np.testing.assert_array_equal(image.pixels, canonical.transpose(2, 1, 0)[:, ::-1, ::-1])
    assert image.pixels.dtype.isnative
    assert not image.hounsfield  # its minimum is -610: not air
    assert image.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_nifti2(tmp_path: Path) -> None:
    image = read(tmp_path, nifti_bytes(marked_ras_volume(), np.eye(4), version=2, gz=True))
    check_orientation(image.pixels)


def test_4d_with_several_volumes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedImage, match=r"4-D NIfTI of shape \(128, 96, 24, 2\): 2 volumes"):
        read(tmp_path, nibabel_file("example4d.nii.gz"))


def test_4d_with_one_volume_reads(tmp_path: Path) -> None:
    data = marked_ras_volume()[..., None]
    check_orientation(read(tmp_path, nifti_bytes(data, np.eye(4))).pixels)


def test_gzip_content_is_detected_without_the_extension(tmp_path: Path) -> None:
    data = nifti_bytes(marked_ras_volume(), np.eye(4), gz=True)
    check_orientation(read(tmp_path, data, name="volume").pixels)


def test_one_entry_per_slice_in_index_order(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "uploads")
    files.add("v.nii", nifti_bytes(marked_ras_volume(), np.eye(4)))
    entries = [image_entry("v.nii", index) for index in (5, 3, 1, 0, 2, 4)]
    image = read_images(entries, files.uploads, LIMITS)
    assert [e.index for e in image.slice_images] == [0, 1, 2, 3, 4, 5]


def test_wrong_number_of_entries(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "uploads")
    files.add("v.nii", nifti_bytes(marked_ras_volume(), np.eye(4)))
    entries = [image_entry("v.nii", index) for index in range(4)]
    with pytest.raises(InvalidInput, match=r"holds 6 slice\(s\) but 4 images entries"):
        read_images(entries, files.uploads, LIMITS)


def test_2d_nifti_files_stack_by_index(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "uploads")
    for value in (1, 2):
        files.add(f"{value}.nii", nifti_bytes(np.full((3, 4), value, np.uint8), np.eye(4)))
    entries = [image_entry("1.nii", 1), image_entry("2.nii", 0)]
    image = read_images(entries, files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [2, 1])
    assert image.pixels.shape == (2, 4, 3)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_volume(tmp_path: Path, gz: bool) -> None:
    data = nifti_bytes(phantom_hu((8, 16, 16)), np.eye(4))
    cut = data[: len(data) // 2]
    with pytest.raises(UnreadableFile, match=r"'cut\.nii' is not a readable NIfTI file"):
        read(tmp_path, gzip.compress(cut) if gz else cut, name="cut.nii")


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(nifti_bytes(phantom_hu((8, 16, 16)), np.eye(4), gz=True))
    data[20:60] = bytes(40)
    with pytest.raises(UnreadableFile):
        read(tmp_path, bytes(data))


def test_header_of_a_pair_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileType, match=r"\.hdr/\.img pair"):
        read(tmp_path, nibabel_file("nifti1.hdr"), name="brain.hdr")


def test_huge_declared_volume_fails_from_the_header(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((20_000, 20_000, 400))
    header.set_data_dtype(np.int16)
    data = header.binaryblock + b"\0" * 4 + b"\0" * 1024
    with pytest.raises(ImageTooLarge, match="20000 x 20000"):
        read(tmp_path, gzip.compress(data))
