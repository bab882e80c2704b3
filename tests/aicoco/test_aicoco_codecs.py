"""Property tests of the codecs: polygons give back every hole-free component, RLE is exact.

The polygon property, for any mask: filling every polygon of ``mask_to_polygons(mask)`` gives
``binary_fill_holes(mask)`` (background 4-connected, the dual of 8-connected regions), and there
is one polygon per 8-connected component. For a component without holes that is the component
itself, pixel for pixel.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from numpy.typing import NDArray
from scipy import ndimage

from aicoco import AiImage, AiRLE, SegmentationStrategy
from aicoco.masks import mask_to_polygons, polygons_to_mask
from aicoco.rle import decode, encode

EIGHT = np.ones((3, 3), dtype=bool)

noise_2d = arrays(np.bool_, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24))


@st.composite
def blobs_2d(draw: st.DrawFn) -> NDArray[np.bool_]:
    """Organ- and lesion-like shapes: smoothed noise cut at a level, holes and pinches included."""
    height, width = draw(st.integers(8, 64)), draw(st.integers(8, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    field = ndimage.uniform_filter(rng.random((height, width)), size=draw(st.integers(2, 9)))
    level = float(np.quantile(field, draw(st.floats(0.2, 0.9))))
    mask: NDArray[np.bool_] = field > level
    return mask


masks_2d = st.one_of(noise_2d, blobs_2d())
label_maps_3d = arrays(
    np.uint8,
    array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=10),
    elements=st.integers(0, 4),
)


def images(count: int) -> list[AiImage]:
    return [AiImage(id=f"i{z}", file_name=f"{z}.dcm", index=z) for z in range(count)]


@settings(max_examples=200, deadline=None)
@given(masks_2d)
def test_polygons_give_back_every_component_2d(mask: NDArray[np.bool_]) -> None:
    found = mask_to_polygons(mask)
    assert np.array_equal(polygons_to_mask(found, mask.shape), ndimage.binary_fill_holes(mask))
    components, count = ndimage.label(mask, structure=EIGHT)
    assert len(found) == count
    for polygon in found:
        alone = polygons_to_mask([polygon], mask.shape)
        owner = components[polygon[1], polygon[0]]
        # Each polygon is exactly one component (holes filled), starting at its top-left pixel.
        assert np.array_equal(alone, ndimage.binary_fill_holes(components == owner))
        top_left = np.argwhere(components == owner)[0]
        assert (polygon[1], polygon[0]) == tuple(top_left)


@settings(max_examples=200, deadline=None)
@given(masks_2d)
def test_polygons_keep_only_corners(mask: NDArray[np.bool_]) -> None:
    for polygon in mask_to_polygons(mask):
        points = np.array(polygon).reshape(-1, 2)
        if len(points) < 3:
            continue
        before = points - np.roll(points, 1, axis=0)
        after = np.roll(points, -1, axis=0) - points
        # Edges are horizontal, vertical or diagonal runs of boundary pixels.
        dx, dy = np.abs(after).T
        assert np.all((dx == 0) | (dy == 0) | (dx == dy))
        before = np.sign(before)
        after = np.sign(after)
        assert not np.any(np.all(before == after, axis=1)), "a collinear vertex was kept"


@settings(max_examples=200, deadline=None)
@given(label_maps_3d)
def test_polygons_give_back_every_component_3d(labels: NDArray[np.uint8]) -> None:
    document = SegmentationStrategy()(
        labels[np.newaxis], images=images(len(labels)), categories=[{"name": "x"}]
    )
    present = sorted(int(v) for v in np.unique(labels) if v)
    assert len(document.objects) == len(present)
    slice_of = {image.id: z for z, image in enumerate(document.images)}
    found = 0
    for label, obj in zip(present, document.objects, strict=True):
        for annotation in (a for a in document.annotations if a.object_id == obj.id):
            assert isinstance(annotation.segmentation, list)
            z = slice_of[annotation.image_id]
            expected = ndimage.binary_fill_holes(labels[z] == label)
            assert np.array_equal(
                polygons_to_mask(annotation.segmentation, labels.shape[1:]), expected
            )
            found += 1
    assert found == sum(int((labels[z] == v).any()) for z in range(len(labels)) for v in present)


@settings(max_examples=200, deadline=None)
@given(masks_2d)
def test_rle_is_exact_2d(mask: NDArray[np.bool_]) -> None:
    rle = encode(mask)
    assert sum(rle.counts) == mask.size
    assert all(count > 0 for count in rle.counts[1:])
    assert np.array_equal(decode(rle), mask)
    assert np.array_equal(decode(rle.model_dump()), mask)


@settings(max_examples=200, deadline=None)
@given(label_maps_3d)
def test_lossless_mode_is_exact_3d(labels: NDArray[np.uint8]) -> None:
    document = SegmentationStrategy(lossless=True)(
        labels[np.newaxis], images=images(len(labels)), categories=[{"name": "x"}]
    )
    present = sorted(int(v) for v in np.unique(labels) if v)
    slice_of = {image.id: z for z, image in enumerate(document.images)}
    rebuilt = np.zeros_like(labels)
    for label, obj in zip(present, document.objects, strict=True):
        for annotation in (a for a in document.annotations if a.object_id == obj.id):
            assert annotation.iscrowd == 1
            assert isinstance(annotation.segmentation, AiRLE)
            piece = decode(annotation.segmentation)
            z = slice_of[annotation.image_id]
            assert piece.any() and not rebuilt[z][piece].any()
            rebuilt[z][piece] = label
    assert np.array_equal(rebuilt, labels)


def test_rle_matches_coco_conventions() -> None:
    """Column-major, background first (a leading 0 when the first pixel is set), no empty tail."""
    mask = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)
    assert encode(mask).counts == [0, 2, 1, 1, 2]  # 1 1 | 0 1 | 0 0, column by column
    assert encode(np.zeros((2, 2), bool)).counts == [4]
    assert encode(np.ones((2, 2), bool)).counts == [0, 4]
    assert encode(np.zeros((0, 3), bool)).counts == []


def test_polygons_to_mask_reads_any_polygon() -> None:
    """Consumers' polygons need not follow our conventions: floats, clockwise or not, clipped."""
    square = [0.5, 0.5, 3.5, 0.5, 3.5, 2.5, 0.5, 2.5]
    expected = np.zeros((4, 5), dtype=bool)
    expected[1:3, 1:4] = True
    assert np.array_equal(polygons_to_mask([square], (4, 5)), expected)
    anticlockwise = np.array(square).reshape(-1, 2)[::-1].ravel().tolist()
    assert np.array_equal(polygons_to_mask([anticlockwise], (4, 5)), expected)
    triangle = [0, 0, 4, 0, 0, 4]
    filled = polygons_to_mask([triangle], (5, 5))
    rows, cols = np.indices((5, 5))
    assert np.array_equal(filled, rows + cols <= 4)
    assert polygons_to_mask([[-10, -10, 100, -10, 100, 100, -10, 100]], (3, 2)).all()
    assert not polygons_to_mask([], (3, 3)).any()
