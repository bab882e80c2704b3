"""The models: extras, numpy values anywhere, numeric index, strict spots of the format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from aicoco import (
    AiAnnotation,
    AiCOCOInput,
    AiCOCOOutput,
    AiImage,
    AiMeta,
    AiObject,
    AiRegressionItem,
    AiRLE,
)


def test_numpy_values_in_extras_serialise() -> None:
    """The reference answers a 500 when a numpy scalar reaches an extra; here it is written."""
    document = AiCOCOOutput(
        images=[AiImage(id="a", file_name="a.png", index=0, spacing=np.float64(0.5))],
        objects=[AiObject(id="o", confidence=np.float32(0.9), rank=np.int64(2))],
        meta=AiMeta(
            task_type="detection",
            histogram=np.arange(3, dtype=np.uint16),
            nested={"deep": [np.bool_(True), {"deeper": np.float16(0.25)}]},
        ),
    )
    expected = {
        "spacing": 0.5,
        "confidence": 0.9,
        "rank": 2,
        "histogram": [0, 1, 2],
        "nested": {"deep": [True, {"deeper": 0.25}]},
    }
    for dumped in (json.loads(document.to_json_bytes()), document.model_dump(mode="json")):
        assert dumped["images"][0]["spacing"] == expected["spacing"]
        assert dumped["objects"][0]["confidence"] == expected["confidence"]
        assert dumped["objects"][0]["rank"] == expected["rank"]
        assert dumped["meta"]["histogram"] == expected["histogram"]
        assert dumped["meta"]["nested"] == expected["nested"]
    assert json.loads(document.model_dump_json()) == json.loads(document.to_json_bytes())


def test_numpy_values_assigned_after_validation_serialise() -> None:
    image = AiImage(id="a", file_name="a.png", index=0)
    image.category_ids = list(np.array(["x", "y"]))
    obj = AiObject(id="o")
    obj.confidence = np.float32(0.5)  # type: ignore[attr-defined]
    document = AiCOCOOutput(images=[image], objects=[obj])
    dumped = json.loads(document.to_json_bytes())
    assert dumped["images"][0]["category_ids"] == ["x", "y"]
    assert dumped["objects"][0]["confidence"] == 0.5


def test_numpy_numbers_in_typed_fields_become_python_numbers() -> None:
    annotation = AiAnnotation(
        id="n",
        image_id="a",
        object_id="o",
        bbox=[[np.int64(1), np.float32(2.5), np.uint8(3), np.float64(4.25)]],
        segmentation=[np.array([1, 2, 3, 4], dtype=np.int32).tolist()],
    )
    assert annotation.bbox == [[1, 2.5, 3, 4.25]]
    assert [type(value) for value in annotation.bbox[0]] == [int, float, int, float]
    item = AiRegressionItem(regression_id="r", value=np.float32(1.5))
    assert type(item.value) is float


def test_unserialisable_values_are_refused_clearly() -> None:
    document = AiCOCOOutput(images=[AiImage(id="a", file_name="a", index=0, odd=object())])
    with pytest.raises(Exception, match="cannot be written as AiCOCO JSON"):
        document.to_json_bytes()


def test_index_is_an_int_and_numeric_strings_are_coerced() -> None:
    entries = [{"id": str(i), "file_name": f"{i}.dcm", "index": str(i)} for i in (10, 9, 100)]
    document = AiCOCOInput.model_validate({"images": entries})
    assert [image.index for image in document.images] == [10, 9, 100]
    assert sorted(image.index for image in document.images) == [9, 10, 100]
    with pytest.raises(ValidationError):
        AiImage(id="x", file_name="x", index="ten")


def test_input_document_keeps_unknown_keys_and_image_extras() -> None:
    document = AiCOCOInput.model_validate(
        {
            "images": [
                {"id": "a", "file_name": "a.dcm", "index": 0, "physical_z": 1.5},
            ],
            "meta": {"patient": "anonymous"},
        }
    )
    dumped = document.model_dump(mode="json")
    assert dumped["meta"] == {"patient": "anonymous"}
    assert dumped["images"][0]["physical_z"] == 1.5
    assert dumped["images"][0]["category_ids"] is None


def test_output_writes_every_key_even_when_empty() -> None:
    dumped = json.loads(
        AiCOCOOutput(images=[AiImage(id="a", file_name="a", index=0)]).to_json_bytes()
    )
    assert dumped == {
        "images": [
            {"id": "a", "file_name": "a", "index": 0, "category_ids": None, "regressions": None}
        ],
        "annotations": [],
        "categories": [],
        "regressions": [],
        "objects": [],
        "meta": {"category_ids": None, "regressions": None},
    }


def test_strict_spots_of_the_format() -> None:
    with pytest.raises(ValidationError):
        AiRegressionItem(regression_id="r", value=1.0, unit="mm")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AiCOCOOutput(images=[], extra_key=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AiImage(id="", file_name="a", index=0)
    with pytest.raises(ValidationError, match="even"):
        AiAnnotation(id="n", image_id="a", object_id="o", segmentation=[[1, 2, 3]])
    with pytest.raises(ValidationError):
        AiAnnotation(id="n", image_id="a", object_id="o", bbox=[[1, 2, 3]])
    with pytest.raises(ValidationError):
        AiAnnotation(id="n", image_id="a", object_id="o", iscrowd=2)


def test_rle_segmentation_is_checked_against_its_size() -> None:
    annotation = AiAnnotation(
        id="n",
        image_id="a",
        object_id="o",
        iscrowd=1,
        segmentation={"size": [2, 3], "counts": [1, 2, 3]},
    )
    assert isinstance(annotation.segmentation, AiRLE)
    with pytest.raises(ValidationError, match="summing to height"):
        AiAnnotation(
            id="n",
            image_id="a",
            object_id="o",
            iscrowd=1,
            segmentation={"size": [2, 3], "counts": [1, 2]},
        )
