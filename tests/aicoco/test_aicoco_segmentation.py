"""Segmentation: objects per label, annotations per slice, and the reference's faults fixed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from aicoco import (
    AiCOCOFormatError,
    AiCOCOOutput,
    AiImage,
    AiRLE,
    IdGenerator,
    SegmentationStrategy,
)
from aicoco.masks import polygons_to_mask
from aicoco.rle import decode

Images = Callable[[int], list[AiImage]]
Check = Callable[[AiCOCOOutput], None]


def polygons(document: AiCOCOOutput, index: int) -> list[list[int | float]]:
    segmentation = document.annotations[index].segmentation
    assert isinstance(segmentation, list)
    return segmentation


def test_semantic_2d_one_object_per_class(
    make_images: Images, ids: IdGenerator, consistent: Check
) -> None:
    mask = np.zeros((2, 8, 10), dtype=np.uint8)
    mask[0, 1:4, 1:5] = 1
    mask[0, 6, 7:9] = 1  # a second piece of the same class: same object, second polygon
    mask[1, 5:7, 1:3] = 1
    categories = [{"name": "a", "supercategory_name": "group"}, {"name": "b"}]
    document = SegmentationStrategy()(mask, images=make_images(1), categories=categories, ids=ids)
    assert [c.name for c in document.categories] == ["a", "b", "group"]
    assert len(document.objects) == 2
    assert [o.category_ids for o in document.objects] == [
        [document.categories[0].id],
        [document.categories[1].id],
    ]
    assert polygons(document, 0) == [[1, 1, 4, 1, 4, 3, 1, 3], [7, 6, 8, 6]]
    assert polygons(document, 1) == [[1, 5, 2, 5, 2, 6, 1, 6]]
    assert all(a.iscrowd == 0 and a.bbox is None for a in document.annotations)
    consistent(document)


def test_instance_3d_objects_span_slices_in_index_order(
    ids: IdGenerator, consistent: Check
) -> None:
    """Slice z is the z-th image by numeric index: "10" comes after "9" (not before, as text)."""
    images = [
        AiImage(id="ten", file_name="10.dcm", index="10"),
        AiImage(id="nine", file_name="9.dcm", index=9),
        AiImage(id="hundred", file_name="100.dcm", index="100"),
    ]
    labels = np.zeros((1, 3, 6, 6), dtype=np.int32)
    labels[0, 0, 1:3, 1:3] = 5  # label 5 on slices 0 and 1
    labels[0, 1, 1:3, 1:3] = 5
    labels[0, 1, 4, 4] = 2  # label 2 on slice 1 only
    labels[0, 2, 0, 0:3] = 2  # and slice 2
    document = SegmentationStrategy()(
        labels, images=images, categories=[{"name": "lesion"}], ids=ids
    )
    assert [image.id for image in document.images] == ["nine", "ten", "hundred"]
    first, second = document.objects  # ascending label: 2 then 5
    by_object = {
        obj.id: [
            (a.image_id, a.segmentation) for a in document.annotations if a.object_id == obj.id
        ]
        for obj in document.objects
    }
    assert by_object[first.id] == [("ten", [[4, 4]]), ("hundred", [[0, 0, 2, 0]])]
    assert by_object[second.id] == [
        ("nine", [[1, 1, 2, 1, 2, 2, 1, 2]]),
        ("ten", [[1, 1, 2, 1, 2, 2, 1, 2]]),
    ]
    consistent(document)


def test_a_class_without_background_keeps_all_its_labels(make_images: Images) -> None:
    """The reference drops the smallest label of such a class (it assumes it is 0)."""
    labels = np.ones((1, 4, 4), dtype=np.uint8)
    labels[0, :, 2:] = 2
    document = SegmentationStrategy()(labels, images=make_images(1), categories=[{"name": "x"}])
    assert len(document.objects) == 2
    assert polygons(document, 0) == [[0, 0, 1, 0, 1, 3, 0, 3]]
    assert polygons(document, 1) == [[2, 0, 3, 0, 3, 3, 2, 3]]
    full = SegmentationStrategy()(
        np.ones((1, 3, 3), dtype=bool), images=make_images(1), categories=[{"name": "x"}]
    )
    assert polygons(full, 0) == [[0, 0, 2, 0, 2, 2, 0, 2]]


def test_labels_need_not_be_small_nor_consecutive(make_images: Images) -> None:
    labels = np.zeros((1, 4, 4), dtype=np.uint64)
    labels[0, 0, 0] = 2**64 - 1
    labels[0, 2, 2:4] = 2**63 + 5
    for lossless in (False, True):
        document = SegmentationStrategy(lossless=lossless)(
            labels, images=make_images(1), categories=[{"name": "x"}]
        )
        assert len(document.objects) == 2
    default = SegmentationStrategy()(labels, images=make_images(1), categories=[{"name": "x"}])
    # Objects come in ascending label order.
    assert [polygons(default, i) for i in range(2)] == [[[2, 2, 3, 2]], [[0, 0]]]


def test_hidden_categories_are_listed_without_objects(make_images: Images) -> None:
    mask = np.ones((2, 3, 3), dtype=np.uint8)
    document = SegmentationStrategy()(
        mask,
        images=make_images(1),
        categories=[{"name": "shown"}, {"name": "hidden", "display": False}],
    )
    assert [c.name for c in document.categories] == ["shown", "hidden"]
    assert len(document.objects) == 1
    assert document.objects[0].category_ids == [document.categories[0].id]


def test_empty_output_gives_no_objects(make_images: Images) -> None:
    document = SegmentationStrategy()(
        np.zeros((1, 2, 4, 4), dtype=np.uint8), images=make_images(2), categories=[{"name": "x"}]
    )
    assert document.objects == [] and document.annotations == []


def test_one_and_two_pixel_components(make_images: Images) -> None:
    """A lone pixel is a one-vertex polygon, a pair (any direction) a two-vertex one."""
    mask = np.zeros((1, 7, 7), dtype=np.uint8)
    mask[0, 0, 0] = 1
    mask[0, 0, 3:5] = 1  # horizontal pair
    mask[0, 3:5, 0] = 1  # vertical pair
    mask[0, 3, 3] = mask[0, 4, 4] = 1  # diagonal pair (8-connected)
    mask[0, 6, 6] = 1
    document = SegmentationStrategy()(mask, images=make_images(1), categories=[{"name": "x"}])
    assert polygons(document, 0) == [[0, 0], [3, 0, 4, 0], [0, 3, 0, 4], [3, 3, 4, 4], [6, 6]]
    assert np.array_equal(polygons_to_mask(polygons(document, 0), (7, 7)), mask[0] == 1)


def test_holes_are_filled_by_default_and_kept_by_the_lossless_mode(make_images: Images) -> None:
    ring = np.ones((1, 5, 5), dtype=np.uint8)
    ring[0, 2, 2] = 0
    default = SegmentationStrategy()(ring, images=make_images(1), categories=[{"name": "x"}])
    assert polygons(default, 0) == [[0, 0, 4, 0, 4, 4, 0, 4]]
    lossless = SegmentationStrategy(lossless=True)(
        ring, images=make_images(1), categories=[{"name": "x"}]
    )
    annotation = lossless.annotations[0]
    assert annotation.iscrowd == 1
    assert isinstance(annotation.segmentation, AiRLE)
    assert annotation.segmentation.size == [5, 5]
    assert annotation.segmentation.counts == [0, 12, 1, 12]
    assert np.array_equal(decode(annotation.segmentation), ring[0] == 1)


def test_lossless_3d_instances(make_images: Images, consistent: Check) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(2, 3, 9, 7)).astype(np.uint16)
    document = SegmentationStrategy(lossless=True)(
        labels, images=make_images(3), categories=[{"name": "a"}, {"name": "b"}]
    )
    image_slice = {image.id: z for z, image in enumerate(document.images)}
    seen = 0
    for obj_number, obj in enumerate(document.objects):
        channel, label = divmod(obj_number, 3)
        for annotation in (a for a in document.annotations if a.object_id == obj.id):
            assert isinstance(annotation.segmentation, AiRLE)
            z = image_slice[annotation.image_id]
            expected = labels[channel, z] == label + 1
            assert np.array_equal(decode(annotation.segmentation), expected)
            seen += 1
    assert seen == sum(
        int((labels[c, z] == v).any()) for c in range(2) for z in range(3) for v in (1, 2, 3)
    )
    consistent(document)


def test_large_volumes_are_processed_in_blocks_with_the_same_result(
    make_images: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((1, 6, 16, 16)) < 0.4).astype(np.uint8)

    def run(lossless: bool) -> bytes:
        return SegmentationStrategy(lossless=lossless)(
            labels, images=make_images(6), categories=[{"name": "x"}], ids=IdGenerator(seed=1)
        ).to_json_bytes()

    whole = run(False), run(True)
    monkeypatch.setattr("aicoco.strategies.segmentation._BLOCK_VOXELS", 16 * 16)
    assert (run(False), run(True)) == whole


@pytest.mark.parametrize(
    ("model_out", "n_images", "message"),
    [
        (np.zeros((2, 4, 4), np.uint8), 1, r"expected 1 channels .* got 2"),
        (np.zeros((1, 3, 4, 4), np.uint8), 2, r"expected 2 slices .*one per image entry"),
        (
            np.zeros((1, 4, 4), np.uint8),
            2,
            r"\(C, Z, H, W\) output with Z = 2, .* shape \(1, 4, 4\)",
        ),
        (np.zeros((1, 4), np.uint8), 1, r"shape \(C, H, W\) or \(C, Z, H, W\)"),
        (np.zeros((1, 4, 4), np.float32), 1, "integer labels .* got dtype float32"),
        (np.full((1, 4, 4), -1, np.int16), 1, r"labels >= 0 \(0 = background\), got -1"),
    ],
)
def test_segmentation_errors(
    model_out: np.ndarray, n_images: int, message: str, make_images: Images
) -> None:
    with pytest.raises(AiCOCOFormatError, match=message):
        SegmentationStrategy()(model_out, images=make_images(n_images), categories=[{"name": "x"}])
