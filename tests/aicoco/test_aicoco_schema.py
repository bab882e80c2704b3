"""The committed JSON Schema is current, and every strategy's output validates against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import numpy as np
import pytest

from aicoco import (
    AiCOCOOutput,
    AiImage,
    ClassificationStrategy,
    DetectionStrategy,
    IdGenerator,
    RegressionStrategy,
    SegmentationStrategy,
)
from aicoco.schema import committed_schema, output_schema, render

Images = Callable[[int], list[AiImage]]


def test_committed_schema_is_current() -> None:
    assert render(committed_schema()) == render(output_schema()), (
        "aicoco/schema/aicoco_output.schema.json is stale: run `python -m aicoco.schema`"
    )


def test_schema_is_a_valid_schema_describing_the_document() -> None:
    schema = committed_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == [
        "images",
        "annotations",
        "categories",
        "regressions",
        "objects",
        "meta",
    ]
    assert schema["additionalProperties"] is False
    definitions = schema["$defs"]
    assert definitions["AiImage"]["properties"]["index"]["type"] == "integer"
    assert definitions["AiImage"]["additionalProperties"] is True
    assert definitions["AiRegressionItem"]["additionalProperties"] is False
    assert {"AiRLE", "AiAnnotation", "AiObject", "AiMeta", "AiCategory"} <= set(definitions)


def outputs(make_images: Images) -> list[AiCOCOOutput]:
    ids = IdGenerator(seed=11)
    categories = [{"name": "a", "supercategory_name": "s", "color": "#fff"}, {"name": "b"}]
    regressions = [{"name": "r", "unit": "mm"}]
    labels = np.zeros((2, 3, 8, 8), dtype=np.uint16)
    labels[0, :, 1:5, 2:6] = 1
    labels[0, 1, 3, 3] = 0
    labels[1, 2, 0, 0] = 7
    labels[1, 2, 6:, 6:] = 9
    return [
        ClassificationStrategy()(
            np.array([1, 0]), images=make_images(1), categories=categories, ids=ids
        ),
        ClassificationStrategy()(
            np.array([1, 1]), images=make_images(3), categories=categories, ids=ids
        ),
        RegressionStrategy()(
            np.array([2.5], np.float32),
            images=make_images(1),
            categories=[],
            regressions=regressions,
        ),
        RegressionStrategy()(
            np.array([2.5]), images=make_images(2), categories=categories, regressions=regressions
        ),
        DetectionStrategy()(
            {
                "bbox_pred": np.array([[0, 1, 2, 3]], np.float32),
                "cls_pred": np.array([[1, 1]]),
                "confidence_score": np.array([0.5], np.float32),
                "regression_value": np.array([[1.25]]),
            },
            images=make_images(1),
            categories=categories,
            regressions=regressions,
            meta={"task_type": "detection", "count": np.int64(1)},
        ),
        SegmentationStrategy()(labels[:, 0], images=make_images(1), categories=categories),
        SegmentationStrategy()(labels, images=make_images(3), categories=categories),
        SegmentationStrategy(lossless=True)(labels, images=make_images(3), categories=categories),
    ]


@pytest.mark.parametrize("number", range(8))
def test_every_strategy_output_validates(number: int, make_images: Images) -> None:
    document = outputs(make_images)[number]
    body: Any = json.loads(document.to_json_bytes())
    jsonschema.validate(body, committed_schema(), cls=jsonschema.Draft202012Validator)
    assert AiCOCOOutput.model_validate(body) == AiCOCOOutput.model_validate_json(
        document.model_dump_json()
    )
    assert body == document.model_dump(mode="json")
