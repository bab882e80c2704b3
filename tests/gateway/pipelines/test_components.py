"""Slab-by-slab connected components give the whole-volume labelling, numbering included."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from gateway.pipelines.components import find_components, label_dtype, write_components


def label_in_slabs(
    volume: npt.NDArray[np.bool_], *, volumetric: bool, slab: int
) -> npt.NDArray[np.uint32]:
    def masks(start: int, stop: int) -> npt.NDArray[np.bool_]:
        return volume[start:stop]

    slices = volume.shape[0]
    components = find_components(masks, slices, volumetric=volumetric, slab=slab)
    out = np.zeros(volume.shape, dtype=np.uint32)
    write_components(components, out, np.arange(slices))
    assert out.max() == components.count
    return out


def whole(volume: npt.NDArray[np.bool_], *, volumetric: bool) -> np.ndarray:
    structure = np.ones((3, 3, 3), dtype=bool)
    if not volumetric:
        structure[0] = structure[2] = False
    labels: np.ndarray = ndimage.label(volume, structure=structure)[0]
    return labels


@pytest.mark.parametrize("slab", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("volumetric", [True, False])
def test_slabs_match_one_whole_volume_labelling(slab: int, volumetric: bool) -> None:
    rng = np.random.default_rng(slab)
    volume = ndimage.binary_opening(rng.random((20, 24, 24)) > 0.6)
    np.testing.assert_array_equal(
        label_in_slabs(volume, volumetric=volumetric, slab=slab),
        whole(volume, volumetric=volumetric),
    )


def test_diagonal_neighbours_across_a_slab_boundary_join() -> None:
    volume = np.zeros((2, 4, 4), dtype=bool)
    volume[0, 1, 1] = volume[1, 2, 2] = True
    assert label_in_slabs(volume, volumetric=True, slab=1).max() == 1
    assert label_in_slabs(volume, volumetric=False, slab=1).max() == 2


def test_slices_go_to_their_slots() -> None:
    volume = np.zeros((3, 2, 2), dtype=bool)
    volume[1, 0, 0] = True

    def masks(start: int, stop: int) -> npt.NDArray[np.bool_]:
        return volume[start:stop]

    components = find_components(masks, 3, volumetric=True, slab=2)
    out = np.zeros(volume.shape, dtype=np.uint8)
    write_components(components, out, np.array([2, 0, 1]))
    assert out[0, 0, 0] == 1
    assert out.sum() == 1


def test_label_dtype() -> None:
    assert label_dtype(0) is np.uint8
    assert label_dtype(255) is np.uint8
    assert label_dtype(256) is np.uint16
    assert label_dtype(70_000) is np.uint32


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 48), st.integers(1, 48)),
    density=st.floats(0.02, 0.7),
    seed=st.integers(0, 2**32 - 1),
    slab=st.integers(1, 8),
)
def test_cc3d_slabs_number_like_scipy(
    shape: tuple[int, int, int], density: float, seed: int, slab: int
) -> None:
    """The volumetric slabs are labelled by cc3d: the numbering (raster order of first
    appearance) must be scipy's, component for component."""
    volume = np.random.default_rng(seed).random(shape) < density
    np.testing.assert_array_equal(
        label_in_slabs(volume, volumetric=True, slab=slab), whole(volume, volumetric=True)
    )


def test_a_clinical_slab_numbers_like_scipy() -> None:
    """Two lungs and scattered specks in 40 slices of 512 x 512, in slabs of 16."""
    y, x = np.ogrid[:512, :512]
    lungs = ((y - 256) ** 2 / 200**2 + (x - 150) ** 2 / 90**2 < 1) | (
        (y - 256) ** 2 / 200**2 + (x - 360) ** 2 / 90**2 < 1
    )
    volume = np.broadcast_to(lungs, (40, 512, 512)) ^ (
        np.random.default_rng(3).random((40, 512, 512)) < 0.001
    )
    np.testing.assert_array_equal(
        label_in_slabs(volume, volumetric=True, slab=16), whole(volume, volumetric=True)
    )
