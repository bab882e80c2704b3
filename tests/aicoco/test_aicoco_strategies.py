"""Classification, regression and detection: where results go and what is refused."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from aicoco import (
    AiCOCOFormatError,
    AiCOCOOutput,
    AiImage,
    ClassificationStrategy,
    DetectionStrategy,
    IdGenerator,
    RegressionStrategy,
)

Images = Callable[[int], list[AiImage]]
Check = Callable[[AiCOCOOutput], None]
CATEGORIES = [{"name": "benign"}, {"name": "malignant", "supercategory_name": "lesion"}]
REGRESSIONS = [{"name": "diameter", "unit": "mm"}, {"name": "volume", "unit": "ml"}]


@pytest.mark.parametrize(
    "model_out",
    [np.array([0, 1]), np.array([False, True]), [0.0, 1.0], np.array([0, 1], dtype=np.uint8)],
)
def test_classification_of_one_image_goes_to_the_image(
    model_out: object, make_images: Images, ids: IdGenerator, consistent: Check
) -> None:
    images = make_images(1)
    document = ClassificationStrategy()(model_out, images=images, categories=CATEGORIES, ids=ids)
    assert document.images[0].category_ids == [document.categories[1].id]
    assert document.meta.category_ids is None
    assert [c.name for c in document.categories] == ["benign", "malignant", "lesion"]
    assert document.annotations == [] and document.objects == []
    assert images[0].category_ids is None  # the caller's entry is not mutated
    consistent(document)


def test_classification_of_a_series_goes_to_meta(make_images: Images, ids: IdGenerator) -> None:
    document = ClassificationStrategy()(
        np.array([1, 1]), images=make_images(3), categories=CATEGORIES, ids=ids, meta={"a": 1}
    )
    assert document.meta.category_ids == [c.id for c in document.categories[:2]]
    assert document.model_dump()["meta"]["a"] == 1
    assert all(image.category_ids is None for image in document.images)


def test_classification_with_no_positive_writes_an_empty_list(make_images: Images) -> None:
    document = ClassificationStrategy()(np.zeros(2), images=make_images(1), categories=CATEGORIES)
    assert document.images[0].category_ids == []


def test_results_replace_what_the_client_sent(make_images: Images) -> None:
    image = make_images(1)[0].model_copy(update={"category_ids": ["client-side-id"]})
    document = ClassificationStrategy()(np.array([1, 0]), images=[image], categories=CATEGORIES)
    assert document.images[0].category_ids == [document.categories[0].id]


@pytest.mark.parametrize(
    ("model_out", "message"),
    [
        (np.array([0.2, 0.9]), r"only 0 or 1 \(threshold the scores first\), got .*0\.2"),
        (np.array([[0, 1]]), r"shape \(2,\), one 0/1 value per declared category, got shape"),
        (np.array([0, 1, 1]), r"shape \(2,\)"),
        (np.array(["a", "b"]), "0/1 values"),
        ("nonsense", r"shape \(2,\)"),
    ],
)
def test_classification_errors_name_what_was_expected(
    model_out: object, message: str, make_images: Images
) -> None:
    with pytest.raises(AiCOCOFormatError, match=message):
        ClassificationStrategy()(model_out, images=make_images(1), categories=CATEGORIES)


def test_no_image_is_refused() -> None:
    with pytest.raises(AiCOCOFormatError, match="at least one image"):
        ClassificationStrategy()(np.array([1, 0]), images=[], categories=CATEGORIES)


def test_regression_of_one_image_and_of_a_series(
    make_images: Images, ids: IdGenerator, consistent: Check
) -> None:
    values = np.array([12.3, 4.5], dtype=np.float32)
    single = RegressionStrategy()(
        values, images=make_images(1), categories=[], regressions=REGRESSIONS, ids=ids
    )
    items = single.images[0].regressions
    assert items is not None
    assert [(i.regression_id, i.value) for i in items] == [
        (single.regressions[0].id, 12.3),
        (single.regressions[1].id, 4.5),
    ]
    series = RegressionStrategy()(
        values, images=make_images(4), categories=[], regressions=REGRESSIONS, ids=ids
    )
    assert series.meta.regressions is not None
    assert [i.value for i in series.meta.regressions] == [12.3, 4.5]
    assert series.images[0].regressions is None
    consistent(single)
    consistent(series)


@pytest.mark.parametrize(
    ("model_out", "message"),
    [
        (np.array([1.0]), r"shape \(2,\), one value per declared regression"),
        (np.array([1.0, np.nan]), r"finite numbers .* got nan at \(1,\)"),
        (np.array([1.0, np.inf]), "finite numbers"),
        (np.array(["1", "2"]), "real numbers"),
    ],
)
def test_regression_errors(model_out: object, message: str, make_images: Images) -> None:
    with pytest.raises(AiCOCOFormatError, match=message):
        RegressionStrategy()(
            model_out, images=make_images(1), categories=[], regressions=REGRESSIONS
        )


def test_detection_objects_and_annotations(
    make_images: Images, ids: IdGenerator, consistent: Check
) -> None:
    categories: list[dict[str, object]] = [
        {"name": "nodule"},
        {"name": "mass"},
        {"name": "hidden", "display": False},
    ]
    model_out = {
        "bbox_pred": np.array([[1, 2, 30, 40], [5.5, 6, 7, 8], [0, 0, 1, 1]], dtype=np.float32),
        "cls_pred": np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]]),
        "confidence_score": np.array([0.9, 0.6, 0.7], dtype=np.float32),
        "regression_value": np.array([[3.0, 1.0], [4.0, 2.0], [5.0, 3.0]]),
    }
    document = DetectionStrategy()(
        model_out, images=make_images(1), categories=categories, regressions=REGRESSIONS, ids=ids
    )
    nodule, mass, _hidden = document.categories
    # The third box only had the hidden category: nothing left to draw, so it is dropped.
    assert [o.category_ids for o in document.objects] == [[nodule.id, mass.id], [mass.id]]
    assert [o.model_dump()["confidence"] for o in document.objects] == [0.9, 0.6]
    assert [[i.value for i in o.regressions or []] for o in document.objects] == [
        [3.0, 1.0],
        [4.0, 2.0],
    ]
    assert [a.bbox for a in document.annotations] == [[[1, 2, 30, 40]], [[5.5, 6, 7, 8]]]
    assert all(a.segmentation is None and a.iscrowd == 0 for a in document.annotations)
    assert [a.object_id for a in document.annotations] == [o.id for o in document.objects]
    consistent(document)


def test_detection_without_optional_outputs_and_without_boxes(make_images: Images) -> None:
    document = DetectionStrategy()(
        {"bbox_pred": [[0, 0, 2, 2]], "cls_pred": [[1]]},
        images=make_images(1),
        categories=[{"name": "nodule"}],
    )
    assert document.objects[0].regressions is None
    assert "confidence" not in document.objects[0].model_dump()
    empty = DetectionStrategy()(
        {"bbox_pred": np.zeros((0, 4)), "cls_pred": [], "confidence_score": []},
        images=make_images(1),
        categories=[{"name": "nodule"}],
    )
    assert empty.objects == [] and empty.annotations == []


@pytest.mark.parametrize(
    ("model_out", "message"),
    [
        ([[0, 0, 1, 1]], "expected a mapping with keys bbox_pred, cls_pred"),
        ({"bbox_pred": [[0, 0, 1, 1]]}, r"missing \['cls_pred'\]"),
        ({"bbox_pred": [[0, 0, 1, 1]], "cls_pred": [[1]], "confidence": [1]}, "unknown"),
        ({"bbox_pred": [[0, 0, 1]], "cls_pred": [[1]]}, r"shape \(N, 4\), each row \[x1"),
        ({"bbox_pred": [[2, 0, 1, 1]], "cls_pred": [[1]]}, "x1 <= x2"),
        ({"bbox_pred": [[0, 0, 1, 1]], "cls_pred": [[1, 0]]}, r"shape \(1, 1\)"),
        ({"bbox_pred": [[0, 0, 1, 1]], "cls_pred": [[0.5]]}, "only 0 or 1"),
        (
            {"bbox_pred": [[0, 0, 1, 1]], "cls_pred": [[1]], "confidence_score": [1, 2]},
            r"`confidence_score` of shape \(1,\)",
        ),
        (
            {"bbox_pred": [[0, 0, 1, 1]], "cls_pred": [[1]], "regression_value": [[1]]},
            r"`regression_value` of shape \(1, 2\)",
        ),
    ],
)
def test_detection_errors(model_out: object, message: str, make_images: Images) -> None:
    with pytest.raises(AiCOCOFormatError, match=message):
        DetectionStrategy()(
            model_out,
            images=make_images(1),
            categories=[{"name": "nodule"}],
            regressions=REGRESSIONS,
        )


def test_detection_needs_exactly_one_image(make_images: Images) -> None:
    with pytest.raises(AiCOCOFormatError, match="exactly one image"):
        DetectionStrategy()(
            {"bbox_pred": [[0, 0, 1, 1]], "cls_pred": [[1]]},
            images=make_images(2),
            categories=[{"name": "nodule"}],
        )


def test_same_seed_same_document(make_images: Images) -> None:
    def run() -> bytes:
        return ClassificationStrategy()(
            np.array([1, 0]),
            images=make_images(1),
            categories=CATEGORIES,
            ids=IdGenerator(seed=5),
        ).to_json_bytes()

    assert run() == run()
