"""Files as real scanners, PACS exports and file transfers produce them: each answered with the
right image or a documented 4xx, never a 500 and never a wrong 200.

Each test is the regression test of one finding (they answered 500 or a wrong 200 before).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage

from gateway.errors import InconsistentSeries, UnreadableFile
from gateway.pipelines.preprocessing import value_range
from gateway.readers import ImageSet, ReadLimits, read_images
from gateway.readers.codestream import declared_size
from tests.factories import RequestFiles, dicom_dataset, pydicom_file

LIMITS = ReadLimits(max_pixels_per_image=100_000_000, max_total_voxels=1_500_000_000)


def read(tmp_path: Path, files: Mapping[str, bytes | Path]) -> ImageSet:
    request = RequestFiles(tmp_path / "uploads")
    for name, content in files.items():
        request.add(name, content)
    return read_images(request.entries(), request.uploads, LIMITS)


def encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# DICOM: enhanced single-frame series.


def enhanced_slice(z: int, position_mm: float, instance: int) -> FileDataset:
    """One single-frame Enhanced CT file: position and orientation only in functional groups."""
    ds = dicom_dataset(
        np.full((8, 8), 1000 + z, np.uint16), modality="CT", instance=instance, seed=5
    )
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.NumberOfFrames = 1
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing = [0.7, 0.7]
    measures.SliceThickness = 2.5
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    position = Dataset()
    position.ImagePositionPatient = [-90.0, -90.0, position_mm]
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
    frame = Dataset()
    frame.PlanePositionSequence = Sequence([position])
    frame.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
    return ds


def enhanced_series(positions: list[float]) -> dict[str, bytes]:
    """Files named and numbered in a shuffled order: only the positions give the slice order."""
    shuffled = np.random.default_rng(1).permutation(len(positions))
    return {
        f"e{int(shuffled[z]):03d}.dcm": encoded(enhanced_slice(z, mm, int(shuffled[z]) + 1))
        for z, mm in enumerate(positions)
    }


def test_an_enhanced_series_is_ordered_by_its_functional_group_positions(tmp_path: Path) -> None:
    image = read(tmp_path, enhanced_series([2.5 * z for z in range(8)]))
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [1000 + z - 1024 for z in range(8)])
    assert image.spacing == (2.5, 0.7, 0.7)


def test_an_enhanced_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    positions = [2.5 * z for z in range(8) if z != 4]
    with pytest.raises(InconsistentSeries, match="slices are missing"):
        read(tmp_path, enhanced_series(positions))


def test_an_enhanced_series_with_a_duplicate_position_is_refused(tmp_path: Path) -> None:
    positions = [0.0, 2.5, 5.0, 5.0, 7.5]
    with pytest.raises(InconsistentSeries, match="same position"):
        read(tmp_path, enhanced_series(positions))


# DICOM: attributes the reader has defaults for, values wrong only while decoding.


@pytest.mark.parametrize("keyword", ["SamplesPerPixel", "PixelRepresentation", "BitsStored"])
def test_a_missing_optional_looking_attribute_takes_the_default(
    tmp_path: Path, keyword: str
) -> None:
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 10
    ds = dicom_dataset(pixels)
    delattr(ds, keyword)
    image = read(tmp_path, {"a.dcm": encoded(ds)})
    np.testing.assert_array_equal(image.pixels[0], pixels)


def test_palette_colour_without_its_lookup_table_is_unreadable(tmp_path: Path) -> None:
    ds = dicom_dataset(np.zeros((8, 8), np.uint8), photometric="PALETTE COLOR")
    with pytest.raises(UnreadableFile, match=r"'p\.dcm'"):
        read(tmp_path, {"p.dcm": encoded(ds)})


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_a_nan_rescale_slope_in_a_later_frame_is_unreadable(tmp_path: Path) -> None:
    frames = []
    for slope in ("1", "1", "NaN"):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = slope, "-1024"
        group = Dataset()
        group.PixelValueTransformationSequence = Sequence([transform])
        frames.append(group)
    ds = dicom_dataset(
        np.zeros((3, 4, 4), np.uint16),
        modality="CT",
        NumberOfFrames=3,
        PerFrameFunctionalGroupsSequence=Sequence(frames),
    )
    with pytest.raises(UnreadableFile, match="not finite"):
        read(tmp_path, {"m.dcm": encoded(ds)})


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_the_reader_boundary_turns_decoder_failures_into_4xx(tmp_path: Path) -> None:
    """Pixel data cut short inside an encapsulated (JPEG 2000) frame: the decoder's own error,
    whatever its type, is the file's fault."""
    data = bytearray(pydicom_file("SC_rgb_gdcm_KY.dcm").read_bytes())
    data[-200:] = b"\xff" * 200
    with pytest.raises(UnreadableFile, match=r"'k\.dcm'"):
        read(tmp_path, {"k.dcm": bytes(data)})


# NIfTI.


def nifti(data: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    image = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    raw: bytes = image.to_bytes()
    return raw


def test_a_gzip_nifti_mangled_by_a_text_mode_transfer_is_unreadable(tmp_path: Path) -> None:
    data = gzip.compress(nifti(np.arange(4096, dtype=np.int16).reshape(16, 16, 16)))
    mangled = data.replace(b"\n", b"\r\n")
    assert mangled != data
    with pytest.raises(UnreadableFile, match=r"'v\.nii\.gz'"):
        read(tmp_path, {"v.nii.gz": mangled})


def test_a_flipped_bit_in_gzip_nifti_data_is_caught_by_the_crc(tmp_path: Path) -> None:
    volume = np.zeros((32, 32, 32), dtype=np.int16)
    data = bytearray(gzip.compress(nifti(volume), compresslevel=0))  # stored: bytes map 1:1
    data[len(data) // 2] ^= 0x10
    with pytest.raises(UnreadableFile, match="CRC"):
        read(tmp_path, {"v.nii.gz": bytes(data)})


@pytest.mark.parametrize("infinity", [np.inf, -np.inf])
def test_one_infinite_voxel_neither_blanks_nor_flips_a_volume(
    tmp_path: Path, infinity: float
) -> None:
    volume = np.linspace(0, 800, 16 * 16 * 4, dtype=np.float32).reshape(16, 16, 4)
    volume[0, 0, 0] = infinity
    image = read(tmp_path, {"mr.nii": nifti(volume)})
    assert not image.hounsfield, "-Inf is not the air of a CT"
    low, high = value_range(image.pixels)
    assert low == pytest.approx(float(volume[np.isfinite(volume)].min()))
    assert high == pytest.approx(800.0)


def test_an_all_nan_sform_is_unreadable(tmp_path: Path) -> None:
    """Patched into the bytes: nibabel's writer would replace the sform with the affine."""
    data = bytearray(nifti(np.zeros((4, 4, 4), np.int16)))
    data[252:256] = np.array([0, 1], dtype="<i2").tobytes()  # qform_code 0, sform_code 1
    data[280:328] = np.full(12, np.nan, dtype="<f4").tobytes()  # srow_x, srow_y, srow_z
    with pytest.raises(UnreadableFile, match="NaN or infinite"):
        read(tmp_path, {"n.nii": bytes(data)})


def test_an_unknown_spatial_unit_is_read_as_millimetres(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header["xyzt_units"] = 7  # not a NIfTI unit code
    result = read(tmp_path, {"u.nii": image.to_bytes()})
    assert result.spacing == (3.0, 2.0, 2.0)


def test_a_codestream_larger_than_the_header_says_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    """Found by `make fuzz`: one altered byte in a JPEG 2000 SIZ marker declared 16.7 M rows
    under a 1024 x 256 header, and openjpeg allocated 24 GiB before failing (an OOM kill)."""
    data = bytearray(pydicom_file("JPEG2000.dcm").read_bytes())
    siz = data.index(b"\xff\x4f\xff\x51")
    ysiz = siz + 12
    data[ysiz : ysiz + 4] = (1024 * 16384).to_bytes(4, "big")
    with pytest.raises(UnreadableFile, match=r"16777216 x 256 pixels where the header declares"):
        read(tmp_path, {"j.dcm": bytes(data)})


@pytest.mark.parametrize(
    "name",
    [
        "JPEG2000.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
    ],
)
def test_codestream_sizes_of_real_files_match_their_headers(name: str) -> None:
    ds = pydicom.dcmread(pydicom_file(name))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert declared_size(frame) == (ds.Rows, ds.Columns)
