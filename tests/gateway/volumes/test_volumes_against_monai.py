"""The volumetric steps against MONAI itself, on the same numbers: the grid and its resampling
(``Spacing``, ``SpatialResample``), the intensity mappings, and the sliding window's patches,
weights and blend (``sliding_window_inference``).

Geometries include the clinical: a 0.7 mm CT of 2.5 mm slices onto a 1.5 x 1.5 x 2.0 mm grid,
volumes smaller than the ROI, overlaps 0.25 and 0.5, both blends, every padding mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import (
    NormalizeIntensity,
    ScaleIntensityRange,
    Spacing,
    SpatialResample,
)

from gateway.volumes import intensity
from gateway.volumes.grid import Resampling, resampled_shape
from gateway.volumes.windows import Accumulator, Plan, mirrorings


def monai_spacing(
    volume: np.ndarray, spacing: tuple[float, ...], target: tuple[float, ...]
) -> tuple[Any, torch.Tensor]:
    affine = torch.from_numpy(np.diag([*spacing, 1.0]))
    image = MetaTensor(torch.from_numpy(volume)[None], affine=affine)
    return Spacing(pixdim=target, mode="bilinear")(image), affine


spacings = st.tuples(*(st.sampled_from([0.5, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0]),) * 3)
shapes = st.tuples(st.integers(1, 24), st.integers(1, 40), st.integers(1, 40))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, spacing=spacings, target=spacings)
def test_the_grid_and_its_values_are_monai_spacings(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    target: tuple[float, float, float],
) -> None:
    volume = np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)
    reference, _ = monai_spacing(volume, spacing, target)
    assert resampled_shape(shape, spacing, target) == tuple(reference.shape[1:])
    mine = Resampling.to_spacing(shape, spacing, target).apply(volume)
    np.testing.assert_allclose(mine, reference[0].numpy(), atol=1e-3)


def test_a_clinical_ct_goes_to_the_model_grid_and_back_as_monai_does() -> None:
    """300 x 512 x 512 is the size users send; its first 40 slices keep the test fast and the
    in-plane size (where an index off by one shows) whole."""
    shape, spacing, target = (40, 512, 512), (2.5, 0.7, 0.7), (2.0, 1.5, 1.5)
    volume = np.random.default_rng(1).integers(-1000, 1500, shape).astype(np.int16)
    reference, affine = monai_spacing(volume.astype(np.float32), spacing, target)
    forward = Resampling.to_spacing(shape, spacing, target)
    mine = forward.apply(volume)
    np.testing.assert_allclose(mine, reference[0].numpy(), atol=2e-3)
    back = SpatialResample(mode="bilinear")(reference, dst_affine=affine, spatial_size=shape)
    np.testing.assert_allclose(
        forward.inverse(spacing, target).apply(mine), back[0].numpy(), atol=2e-3
    )


def test_the_same_spacing_is_no_resampling() -> None:
    assert Resampling.to_spacing((5, 6, 7), (1.0, 0.5, 0.5), (1.0, 0.5, 0.5)).identity
    assert not Resampling.to_spacing((5, 6, 7), (1.0, 0.5, 0.5), (1.0, 0.5, 0.6)).identity


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        (intensity.scale_range(-175, 250, 0, 1, True), ScaleIntensityRange(-175, 250, 0, 1, True)),
        (intensity.scale_range(-1000, 1000, -1, 1, False), ScaleIntensityRange(-1000, 1000, -1, 1)),
        (intensity.window(40, 400), ScaleIntensityRange(-160, 240, 0, 1, clip=True)),
    ],
)
def test_intensity_ranges_are_monais(mine: intensity.Affine, theirs: Any) -> None:
    values = np.random.default_rng(2).uniform(-1500, 1500, (4, 16, 16)).astype(np.float32)
    expected = theirs(torch.from_numpy(values.copy())).numpy()
    mine(values)
    np.testing.assert_allclose(values, expected, atol=1e-5)


def test_the_volume_zscore_is_normalize_intensity() -> None:
    values = np.random.default_rng(3).gamma(2.0, 300.0, (30, 64, 64)).astype(np.float32)
    expected = NormalizeIntensity()(torch.from_numpy(values.copy())).numpy()
    intensity.volume_zscore(values)(values)
    np.testing.assert_allclose(values, expected, atol=1e-4)
    constant = np.full((3, 4, 4), 7.0, dtype=np.float32)
    intensity.volume_zscore(constant)(constant)
    assert not constant.any()


def test_the_fixed_zscore_clips_first_as_nnunet() -> None:
    values = np.array([[[-2000.0, 0.0, 500.0, 3000.0]]], dtype=np.float32)
    intensity.zscore(100.0, 50.0, (-1000.0, 1000.0))(values)
    np.testing.assert_allclose(values[0, 0], [-22.0, -2.0, 8.0, 18.0])


def position_dependent(batch: torch.Tensor) -> torch.Tensor:
    """Three channels that differ with where a voxel sits in its patch: blending shows."""
    return torch.cat([batch, batch.flip(-1) * 2, torch.sin(batch * 3) + batch.flip(-3)], dim=1)


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "blend", "padding"),
    [
        ((20, 33, 41), (8, 16, 16), 0.5, "gaussian", "constant"),
        ((20, 33, 41), (8, 16, 16), 0.25, "constant", "constant"),
        ((5, 12, 40), (8, 16, 16), 0.25, "gaussian", "replicate"),
        ((9, 30, 30), (4, 7, 9), 0.6, "gaussian", "reflect"),
        ((16, 16, 16), (16, 16, 16), 0.5, "gaussian", "constant"),
        ((3, 5, 4), (8, 16, 16), 0.5, "constant", "constant"),
    ],
)
def test_patches_weights_and_blend_are_sliding_window_inferences(
    shape: tuple[int, int, int],
    roi: tuple[int, int, int],
    overlap: float,
    blend: str,
    padding: str,
) -> None:
    volume = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    expected = sliding_window_inference(
        torch.from_numpy(volume)[None, None],
        roi,
        3,
        position_dependent,
        overlap=overlap,
        mode=blend,
        padding_mode=padding,
    )[0].numpy()
    plan = Plan.of(shape, roi, (overlap,) * 3, blend, 0.125)  # type: ignore[arg-type]
    padded = plan.pad(volume, padding, 0.0)  # type: ignore[arg-type]
    accumulator = Accumulator(plan, 3)
    for start in reversed(plan.starts):  # any order: the answers arrive as Triton finishes
        answer = position_dependent(torch.from_numpy(plan.patches(padded, [start])))
        accumulator.add(start, answer[0].numpy())
    np.testing.assert_allclose(accumulator.result(), expected, atol=1e-5)


def test_mirroring_averages_every_subset_of_the_axes() -> None:
    assert mirrorings(()) == [()]
    assert mirrorings((0, 2)) == [(), (0,), (2,), (0, 2)]
    assert len(mirrorings((0, 1, 2))) == 8
