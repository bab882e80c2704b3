"""Pixels to tensor: the maths of the contract's preprocessing rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.transform import resize

from gateway.pipelines.params import InputSpec
from gateway.pipelines.preprocessing import luminance, resize_stack, to_model_input


def spec(**fields: object) -> InputSpec:
    return InputSpec.model_validate({"size": [4, 4], **fields})


def test_shape_and_dtype() -> None:
    pixels = np.zeros((3, 8, 6), dtype=np.uint8)
    x = to_model_input(pixels, hounsfield=False, spec=spec(size=[5, 7]))
    assert x.shape == (3, 1, 5, 7)
    assert x.dtype == np.float32
    assert x.flags.c_contiguous


def test_resize_matches_skimage_bilinear_without_antialiasing() -> None:
    rng = np.random.default_rng(0)
    stack = rng.integers(-1000, 2000, (3, 37, 53)).astype(np.int16)
    for size in [(16, 16), (64, 100), (37, 20)]:
        expected = resize(
            stack.astype(np.float64), (3, *size), order=1, anti_aliasing=False, mode="edge"
        )
        np.testing.assert_allclose(resize_stack(stack, size), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("size", [(24, 32), (16, 16), (48, 16), (12, 64), (8, 8)])
def test_whole_factor_shrinking_is_the_same_bilinear_resize(size: tuple[int, int]) -> None:
    stack = np.random.default_rng(2).integers(0, 65535, (40, 48, 64)).astype(np.uint16)
    factors = (1.0, size[0] / 48, size[1] / 64)
    expected = ndimage.zoom(stack, factors, order=1, mode="nearest", grid_mode=True, output=float)
    np.testing.assert_allclose(resize_stack(stack, size), expected, rtol=1e-6)


def test_resize_to_same_size_copies() -> None:
    stack = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    out = resize_stack(stack, (3, 4))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, stack)


def test_hounsfield_window_clips_and_maps_to_unit() -> None:
    hu = np.array([[[-2000, -1350, -600, 150, 3000]]], dtype=np.int16)
    x = to_model_input(hu, hounsfield=True, spec=spec(size=[1, 5], window=[-600, 1500]))
    np.testing.assert_allclose(x[0, 0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_window_is_ignored_for_values_that_are_not_hounsfield() -> None:
    pixels = np.array([[[0, 51, 255]]], dtype=np.uint8)
    x = to_model_input(pixels, hounsfield=False, spec=spec(size=[1, 3], window=[-600, 1500]))
    np.testing.assert_allclose(x[0, 0, 0], [0.0, 0.2, 1.0], atol=1e-6)


@pytest.mark.parametrize(("dtype", "maximum"), [(np.uint8, 255), (np.uint16, 65535)])
def test_dtype_scale_divides_by_the_dtype_maximum(dtype: type, maximum: int) -> None:
    pixels: np.ndarray = np.array([[[0, maximum // 4, maximum]]], dtype=dtype)
    x = to_model_input(pixels, hounsfield=False, spec=spec(size=[1, 3], scale="dtype"))
    np.testing.assert_allclose(x[0, 0, 0], [0.0, (maximum // 4) / maximum, 1.0], atol=1e-6)


def test_minmax_maps_the_whole_stack() -> None:
    pixels = np.array([[[100, 200]], [[300, 500]]], dtype=np.uint16)
    x = to_model_input(pixels, hounsfield=False, spec=spec(size=[1, 2], scale="minmax"))
    np.testing.assert_allclose(x[:, 0, 0], [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_signed_and_float_pixels_fall_back_to_minmax(dtype: type) -> None:
    pixels: np.ndarray = np.array([[[-10, 0, 30]]], dtype=dtype)
    x = to_model_input(pixels, hounsfield=False, spec=spec(size=[1, 3], scale="dtype"))
    np.testing.assert_allclose(x[0, 0, 0], [0.0, 0.25, 1.0], atol=1e-6)


def test_hounsfield_without_window_uses_minmax() -> None:
    hu = np.array([[[-1000, 0, 1000]]], dtype=np.int16)
    x = to_model_input(hu, hounsfield=True, spec=spec(size=[1, 3]))
    np.testing.assert_allclose(x[0, 0, 0], [0.0, 0.5, 1.0], atol=1e-6)


def test_constant_image_becomes_zeros() -> None:
    x = to_model_input(np.full((1, 2, 2), 7, np.int16), hounsfield=False, spec=spec(size=[2, 2]))
    assert not x.any()


def test_nan_in_float_pixels_becomes_zero() -> None:
    pixels = np.array([[[0.0, np.nan, 2.0]]], dtype=np.float32)
    x = to_model_input(pixels, hounsfield=False, spec=spec(size=[1, 3], scale="minmax"))
    np.testing.assert_allclose(x[0, 0, 0], [0.0, 0.0, 1.0])


def test_rgb_becomes_bt601_luminance() -> None:
    rgb = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]]], dtype=np.uint8)
    np.testing.assert_allclose(luminance(rgb)[0, 0], [76.245, 149.685, 29.07, 255.0], rtol=1e-5)
    x = to_model_input(rgb, hounsfield=False, spec=spec(size=[1, 4]))
    np.testing.assert_allclose(x[0, 0, 0], [0.299, 0.587, 0.114, 1.0], rtol=1e-5)


def test_rgb_minmax_uses_the_luminance_range() -> None:
    rgb = np.array([[[[100, 100, 100], [200, 200, 200]]]], dtype=np.uint8)
    x = to_model_input(rgb, hounsfield=False, spec=spec(size=[1, 2], scale="minmax"))
    np.testing.assert_allclose(x[0, 0, 0], [0.0, 1.0], atol=1e-6)


def test_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        to_model_input(np.zeros((4, 4), np.uint8), hounsfield=False, spec=spec())
