"""Single DICOM files: pydicom's shipped samples of every codec family, and generated edge cases."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from gateway.errors import ImageTooLarge, UnreadableFile, UnsupportedFileType, UnsupportedImage
from gateway.readers import ImageSet, ReadLimits, read_images
from tests.factories import RequestFiles, dicom_dataset, image_entry, pydicom_file

LIMITS = ReadLimits(max_pixels_per_image=100_000_000, max_total_voxels=1_500_000_000)


def read(tmp_path: Path, content: bytes | Path, name: str = "image.dcm", **kw: int) -> ImageSet:
    files = RequestFiles(tmp_path / "uploads")
    files.add(name, content)
    limits = ReadLimits(**{**LIMITS.__dict__, **kw}) if kw else LIMITS
    return read_images(files.entries(), files.uploads, limits)


def save(tmp_path: Path, ds: Dataset, name: str = "generated.dcm") -> Path:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def reference(name: str) -> np.ndarray:
    return np.asarray(pixel_array(pydicom.dcmread(pydicom_file(name))))


def test_ct_rescale_gives_int16_hounsfield_units(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("CT_small.dcm"))
    stored = reference("CT_small.dcm")
    assert image.pixels.shape == (1, 128, 128)
    assert image.pixels.dtype == np.int16
    np.testing.assert_array_equal(image.pixels[0], stored.astype(np.int32) - 1024)
    assert image.hounsfield
    assert image.modality == "CT"
    assert image.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert [e.file_name for e in image.slice_images] == ["image.dcm"]


def test_mr_is_not_hounsfield_and_keeps_its_values(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("MR_small.dcm"))
    np.testing.assert_array_equal(image.pixels[0], reference("MR_small.dcm"))
    assert not image.hounsfield
    assert image.modality == "MR"


def test_big_endian_file_comes_out_native(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("MR_small_bigendian.dcm"))
    assert image.pixels.dtype.isnative
    np.testing.assert_array_equal(image.pixels[0], reference("MR_small.dcm"))


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
        "MR_small_RLE.dcm",  # RLE lossless
        "MR_small_implicit.dcm",
        "MR_small_expb.dcm",
    ],
)
def test_lossless_codecs_match_the_uncompressed_file(tmp_path: Path, name: str) -> None:
    image = read(tmp_path, pydicom_file(name))
    np.testing.assert_array_equal(image.pixels[0], reference("MR_small.dcm"))


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("SC_rgb_rle.dcm", 0),  # RGB, RLE
        ("SC_rgb_gdcm_KY.dcm", 0),  # RGB, JPEG 2000
        ("SC_ybr_full_422_uncompressed.dcm", 3),  # YBR_FULL_422, uncompressed
        ("SC_rgb_jpeg_dcmtk.dcm", 12),  # YBR_FULL, JPEG baseline
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", 12),  # YBR_FULL_422, JPEG baseline
        ("SC_rgb_dcmtk_+eb+cr.dcm", 12),  # RGB, JPEG baseline
        ("SC_rgb_jls_lossy_sample.dcm", 12),  # RGB, JPEG-LS near-lossless
        ("SC_rgb_rle_16bit.dcm", 0),  # 16-bit RGB reduced to 8 bits
    ],
)
def test_colour_files_become_rgb_uint8(tmp_path: Path, name: str, tolerance: int) -> None:
    image = read(tmp_path, pydicom_file(name))
    expected = reference("SC_rgb_rle.dcm")
    assert image.pixels.shape == (1, 100, 100, 3)
    assert image.pixels.dtype == np.uint8
    difference = np.abs(image.pixels[0].astype(int) - expected.astype(int))
    assert np.median(difference) <= tolerance
    # The sample's first rows are pure red: YBR was converted, not passed through.
    assert tuple(image.pixels[0, 2, 50]) == pytest.approx((255, 0, 0), abs=max(tolerance, 1) * 2)


def test_jpeg_2000_with_reversible_colour_transform(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("GDCMJ2K_TextGBR.dcm"))
    assert image.pixels.shape == (1, 400, 400, 3)
    assert image.pixels.dtype == np.uint8


def test_ct_jpeg_2000(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("693_J2KI.dcm"))
    assert image.hounsfield
    assert image.pixels.shape == (1, 512, 512)
    np.testing.assert_array_equal(
        image.pixels[0], reference("693_J2KI.dcm").astype(np.int32) - 1024
    )


def test_palette_colour_goes_through_its_lookup_table(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("examples_palette.dcm"))
    assert image.pixels.shape == (1, 350, 800, 3)
    assert image.pixels.dtype == np.uint8
    assert image.pixels.max() > 200


def test_multiframe_ybr_jpeg_one_entry_per_frame_in_index_order(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "uploads")
    files.add("cine.dcm", pydicom_file("examples_ybr_color.dcm"))
    entries = [image_entry("cine.dcm", index) for index in reversed(range(30))]
    image = read_images(entries, files.uploads, LIMITS)
    assert image.pixels.shape == (30, 240, 320, 3)
    assert [e.index for e in image.slice_images] == list(range(30))


def test_multiframe_with_one_entry_for_the_whole_file(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("rtdose.dcm"))
    assert image.pixels.shape == (15, 10, 10)
    assert len(image.slice_images) == 1
    np.testing.assert_array_equal(image.pixels, reference("rtdose.dcm"))


def test_multiframe_with_a_wrong_number_of_entries(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "uploads")
    files.add("dose.dcm", pydicom_file("rtdose.dcm"))
    entries = [image_entry("dose.dcm", index) for index in range(4)]
    with pytest.raises(Exception, match=r"holds 15 slice\(s\) but 4 images entries") as caught:
        read_images(entries, files.uploads, LIMITS)
    assert getattr(caught.value, "status", None) == 422


def test_rle_multiframe_colour(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("SC_rgb_rle_2frame.dcm"))
    assert image.pixels.shape == (2, 100, 100, 3)


def test_monochrome1_is_inverted_within_the_stored_bits(tmp_path: Path) -> None:
    stored = np.array([[0, 100], [4000, 4095]], dtype=np.uint16)
    ds = dicom_dataset(stored, modality="CR", photometric="MONOCHROME1", bits_stored=12)
    image = read(tmp_path, save(tmp_path, ds))
    np.testing.assert_array_equal(image.pixels[0], 4095 - stored)
    assert image.pixels.dtype == np.uint16


def test_signed_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.array([[-2048, -1], [0, 2047]], dtype=np.int16)
    ds = dicom_dataset(stored, modality="DX", photometric="MONOCHROME1", bits_stored=12)
    image = read(tmp_path, save(tmp_path, ds))
    np.testing.assert_array_equal(image.pixels[0], -1 - stored)


def test_monochrome1_hounsfield_units_are_not_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 1024], [1064, 2048]], dtype=np.int16)
    ds = dicom_dataset(stored, modality="CT", photometric="MONOCHROME1", RescaleIntercept=-1024)
    image = read(tmp_path, save(tmp_path, ds))
    np.testing.assert_array_equal(image.pixels[0], [[-1024, 0], [40, 1024]])
    assert image.hounsfield


def test_fractional_rescale_gives_float32(tmp_path: Path) -> None:
    stored = np.array([[0, 10], [20, 30]], dtype=np.uint16)
    ds = dicom_dataset(stored, modality="PT", RescaleSlope=0.5, RescaleIntercept=1.25)
    image = read(tmp_path, save(tmp_path, ds))
    assert image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels[0], stored * 0.5 + 1.25)
    assert not image.hounsfield


def test_rescale_beyond_int16_widens_to_int32(tmp_path: Path) -> None:
    stored = np.array([[0, 65535]], dtype=np.uint16)
    ds = dicom_dataset(stored, modality="CT", RescaleSlope=1, RescaleIntercept=-1024)
    image = read(tmp_path, save(tmp_path, ds))
    assert image.pixels.dtype == np.int32
    np.testing.assert_array_equal(image.pixels[0], [[-1024, 64511]])


def test_enhanced_multiframe_rescale_from_functional_groups(tmp_path: Path) -> None:
    stored = np.stack([np.full((4, 4), v, np.uint16) for v in (1000, 1100)])
    per_frame = Sequence()
    for intercept in (-1024, -1000):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1, intercept
        group = Dataset()
        group.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(group)
    ds = dicom_dataset(
        stored, modality="CT", NumberOfFrames=2, PerFrameFunctionalGroupsSequence=per_frame
    )
    image = read(tmp_path, save(tmp_path, ds))
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [1000 - 1024, 1100 - 1000])
    assert image.hounsfield


def test_modality_lut_sequence_is_applied(tmp_path: Path) -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.ModalityLUTType = "OD"
    lut.add_new(0x00283006, "US", [10, 20, 30, 40])  # LUTData
    ds = dicom_dataset(np.array([[0, 1], [2, 3]], np.uint16), modality="XA")
    ds.ModalityLUTSequence = Sequence([lut])
    image = read(tmp_path, save(tmp_path, ds))
    np.testing.assert_array_equal(image.pixels[0], [[10, 20], [30, 40]])


def test_truncated_pixel_data_is_422_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile, match=r"'scan\.dcm'.*less than expected"):
        read(tmp_path, pydicom_file("MR_truncated.dcm"), name="scan.dcm")


@pytest.mark.parametrize("length", [200, 1000, 20_000])
def test_cut_files_are_unreadable(tmp_path: Path, length: int) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()[:length]
    with pytest.raises(UnreadableFile, match=r"'cut\.dcm'"):
        read(tmp_path, data, name="cut.dcm")


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_malformed_attribute_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile, match=r"malformed.*1A"):
        read(tmp_path, pydicom_file("badVR.dcm"))


def test_dicom_without_pixel_data_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedImage, match="SR Storage object without pixel data"):
        read(tmp_path, pydicom_file("test-SR.dcm"))


def test_jpeg_lossless_has_no_license_clean_decoder(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileType, match=r"JPEG Lossless.*license-compatible"):
        read(tmp_path, pydicom_file("SC_rgb_jpeg_gdcm.dcm"))


def test_twelve_bit_jpeg_extended_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileType, match="at 12 bits"):
        read(tmp_path, pydicom_file("JPGExtended.dcm"))


def test_gpl_decoder_is_not_installed() -> None:
    import importlib.util

    assert importlib.util.find_spec("libjpeg") is None


def test_huge_declared_dimensions_fail_fast_without_allocating(tmp_path: Path) -> None:
    ds = dicom_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = ds.Columns = 65535
    path = save(tmp_path, ds)
    assert path.stat().st_size < 2048
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge, match=r"65535 x 65535 = 4,294,836,225 pixels"):
            read(tmp_path, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_frames_count_against_the_total_voxels(tmp_path: Path) -> None:
    with pytest.raises(ImageTooLarge, match="MAX_TOTAL_VOXELS") as caught:
        read(tmp_path, pydicom_file("rtdose.dcm"), max_total_voxels=1000)
    assert caught.value.status == 413


def test_raw_dataset_without_preamble_reads_when_named_dcm(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    raw = tmp_path / "raw"
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.save_as(raw, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    image = read(tmp_path, raw, name="old.dcm")
    np.testing.assert_array_equal(image.pixels[0], reference("CT_small.dcm").astype(int) - 1024)
    with pytest.raises(UnsupportedFileType):
        read(tmp_path, raw, name="old.bin")


def test_deflated_dataset_reads(tmp_path: Path) -> None:
    image = read(tmp_path, pydicom_file("image_dfl.dcm"))
    assert image.pixels.shape == (1, 512, 512)


def test_deflate_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    ds = dicom_dataset(np.zeros((8, 8), np.uint8))
    ds.add_new(0x00091010, "OB", bytes(4 * 1024 * 1024))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = save(tmp_path, ds)
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(ImageTooLarge, match="deflated DICOM dataset that inflates past"):
        read(tmp_path, path, max_pixels_per_image=1000)


def test_frames_declared_beyond_the_data(tmp_path: Path) -> None:
    ds = dicom_dataset(np.zeros((1, 1), np.uint16), NumberOfFrames=1_000_000_000)
    with pytest.raises(UnreadableFile, match=r"'image\.dcm' is not a readable DICOM file: frame 0"):
        read(tmp_path, save(tmp_path, ds))


def test_frames_declared_beyond_the_voxel_limit(tmp_path: Path) -> None:
    ds = dicom_dataset(np.zeros((1, 1), np.uint16), NumberOfFrames=2_000_000_000)
    with pytest.raises(ImageTooLarge, match="MAX_TOTAL_VOXELS"):
        read(tmp_path, save(tmp_path, ds))
