"""Model outputs to strategy inputs: aggregation, NMS, box scaling, masks and slice order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from aicoco import AiImage
from gateway.pipelines import postprocessing as post


def test_classification_aggregates_by_max_then_thresholds() -> None:
    probabilities = np.array([[0.1, 0.2], [0.7, 0.3], [0.2, 0.49]], dtype=np.float32)
    np.testing.assert_array_equal(post.classify(probabilities, 0.5, "max"), [1, 0])
    np.testing.assert_array_equal(post.classify(probabilities, 0.332, "mean"), [1, 0])
    np.testing.assert_array_equal(post.classify(probabilities[:1], 0.1, "max"), [1, 1])


def test_regression_aggregates_then_scales() -> None:
    values = np.array([[1.0, 10.0], [3.0, 20.0], [8.0, 60.0]], dtype=np.float32)
    np.testing.assert_allclose(post.regress(values, 2.0, 1.0, "mean"), [9.0, 61.0])
    np.testing.assert_allclose(post.regress(values, 1.0, 0.0, "median"), [3.0, 20.0])
    np.testing.assert_allclose(post.regress(values, 1.0, 0.0, "max"), [8.0, 60.0])
    np.testing.assert_allclose(post.regress(values, 1.0, 0.0, "min"), [1.0, 10.0])


def test_aggregate_rejects_empty() -> None:
    with pytest.raises(ValueError, match="slices"):
        post.aggregate(np.zeros((0, 2)), "max")


def test_box_iou() -> None:
    box = np.array([0.0, 0.0, 10.0, 10.0])
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]], float)
    np.testing.assert_allclose(post.box_iou(box, others), [1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], float)
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    np.testing.assert_array_equal(post.nms(boxes, scores, 0.5), [1, 2])
    np.testing.assert_array_equal(post.nms(boxes, scores, 0.95), [1, 0, 3, 2])


def detect(boxes: np.ndarray, scores: np.ndarray, **kwargs: object) -> dict[str, np.ndarray]:
    options: dict[str, object] = {
        "score_threshold": 0.5,
        "iou_threshold": 0.5,
        "max_detections": 100,
        "scale": (1.0, 1.0),
        "image_size": (100, 100),
    }
    options.update(kwargs)
    return post.detect(boxes, scores, **options)  # type: ignore[arg-type]


def test_detect_thresholds_suppresses_per_class_and_sorts() -> None:
    boxes = np.array(
        [[10, 10, 20, 20], [11, 11, 21, 21], [60, 60, 80, 80], [0, 0, 5, 5]], dtype=np.float32
    )
    scores = np.array([[0.9, 0.0], [0.6, 0.7], [0.1, 0.95], [0.2, 0.3]], dtype=np.float32)
    out = detect(boxes, scores)
    # Box 1 loses class 0 to box 0 but keeps class 1 (another class); box 3 scores too low.
    np.testing.assert_array_equal(out["bbox_pred"], boxes[[2, 0, 1]])
    np.testing.assert_array_equal(out["cls_pred"], [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_allclose(out["confidence_score"], [0.95, 0.9, 0.7], rtol=1e-6)


def test_detect_scales_boxes_to_the_image_and_clips() -> None:
    boxes = np.array([[10, 20, 30, 40], [-5, 0, 300, 10]], dtype=np.float32)
    scores = np.array([[0.9], [0.8]], dtype=np.float32)
    out = detect(boxes, scores, scale=(2.0, 0.5), image_size=(200, 100))
    np.testing.assert_allclose(out["bbox_pred"], [[5, 40, 15, 80], [0, 0, 100, 20]])


def test_detect_drops_empty_and_non_finite_boxes_and_caps_the_count() -> None:
    boxes = np.array(
        [[10, 10, 10, 20], [np.nan, 0, 1, 1], [0, 0, 5, 5], [50, 50, 60, 60]], dtype=np.float32
    )
    scores = np.array([[0.9], [0.9], [0.6], [0.7]], dtype=np.float32)
    out = detect(boxes, scores, max_detections=1)
    np.testing.assert_array_equal(out["bbox_pred"], [[50, 50, 60, 60]])


def test_detect_with_no_box_left() -> None:
    out = detect(np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32))
    assert out["bbox_pred"].shape == (0, 4)
    assert out["cls_pred"].shape == (0, 2)
    assert out["confidence_score"].shape == (0,)


def test_detect_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="score rows"):
        detect(np.zeros((3, 4)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        detect(np.zeros((3, 5)), np.zeros((3, 1)))


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    field: np.ndarray = ndimage.gaussian_filter(rng.random(shape), sigma=(0, 2, 2))
    field = (field - field.min()) / (field.max() - field.min())
    return field.astype(np.float32)


@pytest.mark.parametrize("size", [(64, 64), (100, 37), (16, 16), (5, 3), (32, 32)])
def test_resize_mask_is_bilinear_resize_then_threshold(size: tuple[int, int]) -> None:
    maps = smooth_field(np.random.default_rng(1), (3, 32, 32))
    factors = (1.0, size[0] / 32, size[1] / 32)
    resized = ndimage.zoom(maps, factors, order=1, mode="nearest", grid_mode=True)
    expected = resized >= 0.5
    got = post.resize_mask(maps, 0.5, size)
    assert got.shape == (3, *size)
    assert (got != expected).sum() <= 1  # a value within rounding of the threshold at most


def test_resize_mask_of_a_mask_output_is_nearest() -> None:
    maps = np.array([[[0, 3], [1, 0]]], dtype=np.uint8)
    expected = [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    np.testing.assert_array_equal(post.resize_mask(maps, None, (4, 4))[0], expected)


def test_segment_layout_is_classes_first() -> None:
    maps = np.zeros((3, 2, 4, 4), dtype=np.float32)
    maps[1, 1] = 1.0
    out = post.segment(maps, threshold=0.5, instances=False, volumetric=False, image_size=(8, 8))
    assert out.shape == (2, 3, 8, 8)
    assert out.dtype == bool
    assert out[1, 1].all()
    assert out.sum() == 64


def test_instances_per_class_2d_and_3d() -> None:
    maps = np.zeros((2, 2, 5, 5), dtype=np.float32)  # (Z, C, h, w)
    maps[0, 0, 0:2, 0:2] = 1  # class 0, blob A on slice 0 ...
    maps[1, 0, 1:3, 1:3] = 1  # ... continuing on slice 1
    maps[0, 0, 4, 4] = 1  # class 0, blob B, slice 0 only
    maps[0, 1, 2, 2] = 1  # class 1
    volume = post.segment(maps, threshold=0.5, instances=True, volumetric=True, image_size=(5, 5))
    assert volume.shape == (2, 2, 5, 5)
    assert sorted(np.unique(volume[0])) == [0, 1, 2]
    assert volume[0, 0, 0, 0] == volume[0, 1, 1, 1]  # A is one object across slices
    assert sorted(np.unique(volume[1])) == [0, 1]
    slices = post.segment(maps, threshold=0.5, instances=True, volumetric=False, image_size=(5, 5))
    assert sorted(np.unique(slices[0])) == [0, 1, 2, 3]  # A counted once per slice, plus B
    assert slices[0, 0, 0, 0] != slices[0, 1, 1, 1]


def test_instances_use_full_connectivity() -> None:
    maps = np.zeros((1, 1, 3, 3), dtype=np.float32)
    maps[0, 0, 0, 0] = maps[0, 0, 1, 1] = 1.0  # touching at a corner
    out = post.segment(maps, threshold=0.5, instances=True, volumetric=False, image_size=(3, 3))
    assert out.max() == 1


def images_with_indices(indices: list[int]) -> list[AiImage]:
    return [
        AiImage(
            id=f"img{i:02d}", file_name=f"{i}.dcm", index=i, category_ids=None, regressions=None
        )
        for i in indices
    ]


def test_slice_order_follows_the_entries_index() -> None:
    # Stack (geometric) order holds the entries with indices 30, 10, 20.
    stack_images = images_with_indices([30, 10, 20])
    order = post.index_order(stack_images)
    np.testing.assert_array_equal(order, [1, 2, 0])
    maps = np.stack([np.full((1, 2, 2), z, np.float32) for z in (0.0, 1.0, 0.0)])
    maps[0, 0, 0, 0] = 1.0  # stack slice 0 (index 30) has a single pixel
    out = post.segment(
        maps, threshold=0.5, instances=False, volumetric=True, image_size=(2, 2), order=order
    )
    # Strategy slot z = z-th entry in index order: 10 (stack 1), 20 (stack 2), 30 (stack 0).
    assert out[0, 0].all()
    assert not out[0, 1].any()
    assert out[0, 2].sum() == 1


def test_instance_labels_widen_past_255_objects() -> None:
    maps = np.zeros((1, 1, 40, 40), dtype=np.float32)
    maps[0, 0, ::2, ::2] = 1.0  # 400 isolated pixels
    out = post.segment(maps, threshold=0.5, instances=True, volumetric=False, image_size=(40, 40))
    assert out.dtype == np.uint16
    assert out.max() == 400


def test_instances_connect_slices_adjacent_in_the_stack_not_in_index_order() -> None:
    maps = np.zeros((3, 1, 5, 5), dtype=np.float32)
    maps[0, 0, 1, 1] = maps[1, 0, 1, 1] = 1.0  # one blob over stack slices 0 and 1
    maps[2, 0, 4, 4] = 1.0  # another on stack slice 2, not touching slice 1's blob
    order = post.index_order(images_with_indices([5, 30, 10]))  # slots: stack 0, 2, 1
    out = post.segment(
        maps, threshold=0.5, instances=True, volumetric=True, image_size=(5, 5), order=order
    )
    assert out[0, 0, 1, 1] == out[0, 2, 1, 1] != 0  # stack 0 and 1, now in slots 0 and 2
    assert out[0, 1, 4, 4] not in (0, out[0, 0, 1, 1])


@pytest.mark.parametrize("instances", [False, True])
def test_mask_stack_fed_batches_out_of_order_equals_segment_of_the_whole(instances: bool) -> None:
    """Widths that are not a multiple of 8 check the bit packing's last byte."""
    maps = smooth_field(np.random.default_rng(3), (7 * 2, 12, 12)).reshape(7, 2, 12, 12)
    order = np.array([6, 0, 5, 1, 4, 2, 3])
    whole = post.segment(
        maps, threshold=0.5, instances=instances, volumetric=True, image_size=(19, 21), order=order
    )
    stack = post.MaskStack(2, 7, (19, 21))
    for start in (4, 0, 6, 2):
        stop = min(start + 2, 7)
        stack.put(start, maps[start:stop], 0.5)
    got = stack.result(instances=instances, volumetric=True, order=order)
    assert got.dtype == whole.dtype
    np.testing.assert_array_equal(got, whole)


def test_mask_stack_refuses_maps_that_do_not_fit() -> None:
    stack = post.MaskStack(2, 4, (8, 8))
    with pytest.raises(ValueError, match=r"expected \(slices, 2, rows, cols\) maps"):
        stack.put(0, np.zeros((2, 3, 4, 4), np.float32), 0.5)
    with pytest.raises(ValueError, match="outside the stack of 4"):
        stack.put(3, np.zeros((2, 2, 4, 4), np.float32), 0.5)


def test_detect_with_no_box_at_all_or_none_over_threshold() -> None:
    """The empty-array class of the formatter crash, on the detection path: zero candidate
    boxes, and candidates of which none reaches the threshold."""
    for boxes, scores in (
        (np.zeros((0, 4), np.float32), np.zeros((0, 2), np.float32)),
        (np.array([[1, 1, 5, 5]], np.float32), np.array([[0.1, 0.2]], np.float32)),
    ):
        found = post.detect(
            boxes,
            scores,
            score_threshold=0.5,
            iou_threshold=0.5,
            max_detections=10,
            scale=(2.0, 2.0),
            image_size=(512, 512),
        )
        assert found["bbox_pred"].shape == (0, 4)
        assert found["cls_pred"].shape == (0, 2)
        assert found["confidence_score"].shape == (0,)


def test_instances_of_a_long_volume_with_empty_slabs_between_them() -> None:
    """Two components 200 slices apart in a 300-slice stack: the slabs between them are empty."""
    maps = np.zeros((300, 1, 64, 64), np.float32)
    maps[20, 0, 10:20, 10:20] = 1.0
    maps[220, 0, 30:40, 30:40] = 1.0
    labels = post.segment(
        maps, threshold=0.5, instances=True, volumetric=True, image_size=(128, 128)
    )
    assert labels.shape == (1, 300, 128, 128)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    assert set(np.unique(labels[0, 20])) == {0, 1} and set(np.unique(labels[0, 220])) == {0, 2}
