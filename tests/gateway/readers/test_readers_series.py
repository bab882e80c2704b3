"""DICOM series sent as one file per slice: geometric order, fallbacks and consistency checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from gateway.errors import ImageTooLarge, InconsistentSeries, InvalidInput, NoSuitableSeries
from gateway.readers import ReadLimits, read_images
from tests.factories import (
    RequestFiles,
    image_entry,
    make_ct_series,
    phantom_hu,
    pydicom_file,
    slice_normal,
)

LIMITS = ReadLimits(max_pixels_per_image=100_000_000, max_total_voxels=1_500_000_000)
SHAPE = (12, 32, 24)


@pytest.fixture
def hu() -> np.ndarray:
    return phantom_hu(SHAPE)


def upload_all(tmp_path: Path, paths: list[Path], order: list[int] | None = None) -> RequestFiles:
    """Upload ``paths`` in ``order``; the entries' index follows the upload order."""
    files = RequestFiles(tmp_path / "uploads")
    for i in order if order is not None else range(len(paths)):
        files.add(paths[i].name, paths[i])
    return files


def edit(path: Path, **attributes: object) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def test_series_in_order(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu, spacing=(2.5, 0.7, 0.8))
    files = upload_all(tmp_path, paths)
    image = read_images(files.entries(), files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels, hu)
    assert image.pixels.dtype == np.int16
    assert image.hounsfield
    assert image.modality == "CT"
    assert image.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert [e.file_name for e in image.slice_images] == [p.name for p in paths]


def test_shuffled_series_reads_like_the_ordered_one(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu, shuffle=7)
    order = [int(i) for i in np.random.default_rng(1).permutation(len(paths))]
    files = upload_all(tmp_path, paths, order)
    image = read_images(files.entries(), files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels, hu)
    # slice_images follow space, not the client's index order.
    assert [e.file_name for e in image.slice_images] == [p.name for p in paths]
    assert [e.index for e in image.slice_images] == [order.index(z) for z in range(len(paths))]


def test_tilted_series_is_ordered_along_the_normal_not_by_z(tmp_path: Path, hu: np.ndarray) -> None:
    angle = np.deg2rad(60)
    orientation = (1.0, 0.0, 0.0, 0.0, -np.cos(angle), -np.sin(angle))
    paths = make_ct_series(tmp_path / "series", hu, orientation=orientation, spacing=(2, 1, 1))
    normal, column = slice_normal(orientation), np.array(orientation[3:])
    shifts = np.random.default_rng(3).uniform(-30, 30, len(paths))
    z_values = []
    for z, path in enumerate(paths):
        # Table shifts within the slice plane move z but not the position along the normal.
        position = np.array([-100.0, -100.0, 50.0]) + z * 2.0 * normal + shifts[z] * column
        edit(path, ImagePositionPatient=[round(float(v), 4) for v in position])
        z_values.append(position[2])
    assert list(np.argsort(z_values)) != list(range(len(paths)))
    assert list(np.argsort(z_values)) != list(reversed(range(len(paths))))
    files = upload_all(tmp_path, paths, [int(i) for i in np.argsort(z_values)])
    image = read_images(files.entries(), files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels, hu)
    assert image.spacing is not None and image.spacing[0] == pytest.approx(2.0, abs=1e-3)


def test_sagittal_series_with_constant_z(tmp_path: Path, hu: np.ndarray) -> None:
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    paths = make_ct_series(tmp_path / "series", hu, orientation=sagittal)
    files = upload_all(tmp_path, paths, list(reversed(range(len(paths)))))
    image = read_images(files.entries(), files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels, hu)


def test_instance_number_orders_a_series_without_positions(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu)
    for path in paths:
        edit(path, ImagePositionPatient=None)
    files = upload_all(tmp_path, paths, [3, 0, 11, 5, 1, 2, 4, 6, 10, 9, 8, 7])
    image = read_images(files.entries(), files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels, hu)
    assert image.spacing == pytest.approx((2.5, 0.7, 0.7))  # SliceThickness


def test_index_orders_a_series_without_positions_or_numbers(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu)
    for path in paths:
        edit(path, ImageOrientationPatient=None, InstanceNumber=None)
    order = [2, 0, 1, 3, 4, 5, 6, 7, 8, 9, 11, 10]
    files = upload_all(tmp_path, paths, order)
    image = read_images(files.entries(), files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels, hu[order])


def test_repeated_instance_numbers_without_positions(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu)
    for path in paths:
        edit(path, ImagePositionPatient=None, InstanceNumber=1)
    files = upload_all(tmp_path, paths)
    with pytest.raises(InconsistentSeries, match="InstanceNumbers repeat"):
        read_images(files.entries(), files.uploads, LIMITS)


def test_missing_slice(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu)
    del paths[5]
    files = upload_all(tmp_path, paths)
    with pytest.raises(InconsistentSeries, match=r"slices are missing between 'ct_0004.dcm'") as e:
        read_images(files.entries(), files.uploads, LIMITS)
    assert "5.000 mm apart where the series' spacing is 2.500 mm" in e.value.message
    assert e.value.status == 422


def test_duplicate_position(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu)
    files = upload_all(tmp_path, paths)
    files.add("copy_of_3.dcm", paths[3])
    with pytest.raises(InconsistentSeries, match="same position"):
        read_images(files.entries(), files.uploads, LIMITS)


def test_mixed_sizes(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "a", hu)
    other = make_ct_series(tmp_path / "b", phantom_hu((1, 16, 16)), origin=(0, 0, 100))
    files = upload_all(tmp_path, paths)
    files.add("small.dcm", other[0])
    with pytest.raises(InconsistentSeries, match=r"mixed size .*32 x 24: 12 file.*16 x 16: 1 file"):
        read_images(files.entries(), files.uploads, LIMITS)


def test_mixed_orientations(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu)
    edit(paths[4], ImageOrientationPatient=[1, 0, 0, 0, 0.98, 0.199])
    files = upload_all(tmp_path, paths)
    with pytest.raises(InconsistentSeries, match=r"mixed orientations.*'ct_0004.dcm'"):
        read_images(files.entries(), files.uploads, LIMITS)


def test_several_series_the_rules_choose_one(tmp_path: Path, hu: np.ndarray) -> None:
    """A study uploaded whole: the series rules pick the series, the rest is left out."""
    paths = make_ct_series(tmp_path / "a", hu)
    thick = make_ct_series(tmp_path / "b", phantom_hu((3, 32, 24)), seed=9)
    scouts = make_ct_series(tmp_path / "c", phantom_hu((20, 32, 24)), seed=10)
    for scout in scouts:
        edit(scout, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    files = upload_all(tmp_path, paths)
    for k, path in enumerate([*thick, *scouts]):
        files.add(f"other-{k}.dcm", path)
    image = read_images(files.entries(), files.uploads, LIMITS)
    assert image.pixels.shape[0] == len(paths)
    assert {entry.file_name for entry in image.slice_images} == {path.name for path in paths}


def test_no_series_fits_the_rules(tmp_path: Path) -> None:
    scout = make_ct_series(tmp_path / "a", phantom_hu((2, 32, 24)), seed=3)
    capture = make_ct_series(tmp_path / "b", phantom_hu((2, 32, 24)), seed=4)
    for path in scout:
        edit(path, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesNumber=1)
    for path in capture:
        edit(path, ImageType=["DERIVED", "SECONDARY"], SeriesNumber=2)
    files = RequestFiles(tmp_path / "uploads")
    for k, path in enumerate([*scout, *capture]):
        files.add(f"{k}.dcm", path)
    with pytest.raises(NoSuitableSeries) as refused:
        read_images(files.entries(), files.uploads, LIMITS)
    message = str(refused.value)
    assert "series 1 (CT, 2 slices): ImageType says LOCALIZER" in message
    assert "series 2 (CT, 2 slices): ImageType says DERIVED\\SECONDARY" in message


def test_multiframe_file_in_a_multifile_request(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu[:2])
    files = upload_all(tmp_path, paths)
    dose = tmp_path / "dose.dcm"
    shutil.copyfile(pydicom_file("rtdose.dcm"), dose)
    series = pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID
    edit(dose, SeriesInstanceUID=series)
    files.add("dose.dcm", dose)
    with pytest.raises(InvalidInput, match=r"'dose\.dcm' holds 15 slices"):
        read_images(files.entries(), files.uploads, LIMITS)


def test_series_over_the_voxel_limit_fails_before_decoding(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu)
    files = upload_all(tmp_path, paths)
    limits = ReadLimits(max_pixels_per_image=10_000, max_total_voxels=32 * 24 * 10)
    with pytest.raises(ImageTooLarge, match="MAX_TOTAL_VOXELS"):
        read_images(files.entries(), files.uploads, limits)


def test_two_slices_are_a_series(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu[:2], spacing=(3.0, 1.0, 1.0))
    files = upload_all(tmp_path, paths, [1, 0])
    image = read_images(files.entries(), files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels, hu[:2])
    assert image.spacing == pytest.approx((3.0, 1.0, 1.0))


def test_entries_with_explicit_indices(tmp_path: Path, hu: np.ndarray) -> None:
    paths = make_ct_series(tmp_path / "series", hu[:3])
    files = upload_all(tmp_path, paths)
    entries = [image_entry(p.name, 100 - i) for i, p in enumerate(paths)]
    image = read_images(entries, files.uploads, LIMITS)
    assert [e.index for e in image.slice_images] == [100, 99, 98]
