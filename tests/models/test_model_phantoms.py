"""The phantom generator: deterministic, anatomically consistent, with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from training.phantoms import (
    LUNG_WINDOW,
    phantom_slice,
    phantom_volume,
    pixel_spacing_mm,
    resize_bilinear,
    window_to_uint8,
    window_to_unit,
)


def test_same_seed_same_slice() -> None:
    first = phantom_slice(np.random.default_rng(7), 256)
    second = phantom_slice(np.random.default_rng(7), 256)
    np.testing.assert_array_equal(first.hu, second.hu)
    np.testing.assert_array_equal(first.lesion_labels, second.lesion_labels)
    assert first.lesions == second.lesions
    other = phantom_slice(np.random.default_rng(8), 256)
    assert not np.array_equal(first.hu, other.hu)


@pytest.mark.parametrize("seed", range(5))
def test_slice_anatomy_and_truth_agree(seed: int) -> None:
    phantom = phantom_slice(np.random.default_rng(seed), 512, [8.0, 15.0])
    assert phantom.hu.dtype == np.int16 and phantom.hu.shape == (512, 512)
    masks = phantom.masks
    assert not (masks["left_lung"] & masks["right_lung"]).any()
    assert np.array_equal(masks["lung"], masks["left_lung"] | masks["right_lung"])
    assert not (masks["lesion"] & ~masks["lung"]).any()
    assert not (masks["lung"] & ~masks["body"]).any()
    assert phantom.hu[~masks["body"]].mean() < -900
    lung_only = masks["lung"] & ~masks["lesion"]
    assert -900 < np.median(phantom.hu[lung_only]) < -750
    assert phantom.spacing_mm == pytest.approx(0.7)
    assert len(phantom.lesions) == 2
    for number, lesion in enumerate(phantom.lesions, start=1):
        pixels = np.argwhere(phantom.lesion_labels == number)
        x1, y1, x2, y2 = lesion.box
        assert pixels[:, 1].min() >= x1 - 1 and pixels[:, 1].max() + 1 <= x2 + 1
        assert pixels[:, 0].min() >= y1 - 1 and pixels[:, 0].max() + 1 <= y2 + 1
        assert x2 - x1 == pytest.approx(lesion.diameter_mm / phantom.spacing_mm)
        assert masks[f"{lesion.side}_lung"][pixels[:, 0], pixels[:, 1]].all()
        row, col = lesion.center
        core = phantom.hu[int(row) - 1 : int(row) + 2, int(col) - 1 : int(col) + 2]
        assert -30 < np.median(core) < 90


def test_left_lung_is_on_the_image_right() -> None:
    phantom = phantom_slice(np.random.default_rng(3), 256, 0)
    columns = np.arange(256)
    left = (phantom.masks["left_lung"] * columns).sum() / phantom.masks["left_lung"].sum()
    right = (phantom.masks["right_lung"] * columns).sum() / phantom.masks["right_lung"].sum()
    assert left > 128 > right


def test_random_lesion_counts() -> None:
    counts = [len(phantom_slice(np.random.default_rng(s), 128).lesions) for s in range(40)]
    assert 0 in counts and max(counts) <= 3 and sum(c > 0 for c in counts) >= 10


def test_volume_spheres_lie_in_the_lungs() -> None:
    volume = phantom_volume(np.random.default_rng(11), 24, 256, [10.0, 20.0], slice_thickness_mm=4)
    assert volume.hu.shape == volume.lung_labels.shape == volume.lesion_labels.shape
    assert volume.hu.shape == (24, 256, 256)
    assert volume.spacing_mm == pytest.approx([4.0, pixel_spacing_mm(256), pixel_spacing_mm(256)])
    assert len(volume.lesions) == 2
    lesion = volume.lesion_labels > 0
    assert not (lesion & ~volume.lung).any()
    for number, item in enumerate(volume.lesions, start=1):
        slices = np.flatnonzero((volume.lesion_labels == number).any(axis=(1, 2)))
        assert abs(len(slices) * 4 - item.diameter_mm) <= 2 * 4
        assert slices.min() <= item.center[0] <= slices.max() + 1
        side = 2 if item.side == "left" else 1
        assert (volume.lung_labels[volume.lesion_labels == number] == side).all()
    assert not volume.lung[0].any() or volume.lung[0].sum() < volume.lung[12].sum()


def test_window_functions() -> None:
    center, width = LUNG_WINDOW
    hu = np.array([-2000, center - width / 2, center, center + width / 2, 3000])
    np.testing.assert_allclose(window_to_unit(hu, center, width), [0, 0, 0.5, 1, 1])
    np.testing.assert_array_equal(window_to_uint8(hu, center, width), [0, 0, 128, 255, 255])
    assert window_to_uint8(hu, center, width).dtype == np.uint8


def test_resize_bilinear_keeps_pixel_centres() -> None:
    image = np.tile(np.arange(8, dtype=np.float32), (8, 1))
    half = resize_bilinear(image, (4, 4))
    np.testing.assert_allclose(half[0], [0.5, 2.5, 4.5, 6.5])
    stack = resize_bilinear(np.stack([image, image]), (16, 16))
    assert stack.shape == (2, 16, 16)
