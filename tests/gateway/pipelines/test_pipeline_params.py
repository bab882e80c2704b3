"""The ``aicoco.*`` parameters: a mistake names the model and the parameter."""

from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidModelConfig
from gateway.pipelines.params import (
    ClassificationOutput,
    DetectionOutput,
    RegressionOutput,
    SegmentationOutput,
    has_aicoco_parameters,
)
from gateway.pipelines.tasks import parse_params


def parameters(**overrides: object) -> dict[str, str]:
    base: dict[str, object] = {
        "aicoco.task": "classification",
        "aicoco.categories": [{"name": "nodule"}, {"name": "large_nodule", "display": False}],
        "aicoco.input": {"size": [256, 256], "window": [-600, 1500], "scale": "dtype"},
        "aicoco.output": {"threshold": 0.4},
    }
    base.update({key.replace("__", "."): value for key, value in overrides.items()})
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in base.items()
        if value is not None
    }


def test_parses_a_classifier() -> None:
    params = parse_params("m", parameters())
    assert params.task == "classification"
    assert [c.name for c in params.categories] == ["nodule", "large_nodule"]
    assert params.categories[1].display is False
    assert params.input.size == (256, 256)
    assert params.input.window == (-600.0, 1500.0)
    assert params.input.dims == 2
    assert params.output == ClassificationOutput(threshold=0.4, aggregate="max")


@pytest.mark.parametrize(
    ("task", "output", "expected"),
    [
        ("regression", {}, RegressionOutput()),
        ("detection", {"score_threshold": 0.3}, DetectionOutput(score_threshold=0.3)),
        ("segmentation", {"instances": True}, SegmentationOutput(instances=True)),
    ],
)
def test_output_defaults_per_task(task: str, output: dict[str, object], expected: object) -> None:
    params = parse_params(
        "m",
        parameters(
            aicoco__task=task,
            aicoco__output=output,
            aicoco__regressions=[{"name": "diameter", "unit": "mm"}],
        ),
    )
    assert params.output == expected


def test_regression_extras_are_kept() -> None:
    params = parse_params(
        "m",
        parameters(
            aicoco__task="regression",
            aicoco__regressions=[{"name": "d", "unit": "mm"}],
            aicoco__output={},
        ),
    )
    assert params.regressions[0].model_dump(exclude_none=True) == {"name": "d", "unit": "mm"}


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"aicoco__task": "segmentaton"}, "aicoco.task", "must be one of"),
        ({"aicoco__task": None}, "aicoco.task", "must be one of"),
        ({"aicoco__categories": "[{'name': 'x'}]"}, "aicoco.categories", "not valid JSON"),
        ({"aicoco__categories": {"name": "x"}}, "aicoco.categories", "JSON list"),
        ({"aicoco__categories": [{"nam": "x"}]}, "aicoco.categories", "name"),
        ({"aicoco__categories": [{"name": "a"}, {"name": "a"}]}, "aicoco.categories", "duplicate"),
        ({"aicoco__categories": []}, "aicoco.categories", "at least one category"),
        ({"aicoco__input": None}, "aicoco.input", "is required"),
        ({"aicoco__input": {"size": [256]}}, "aicoco.input", "size"),
        ({"aicoco__input": {"size": [0, 256]}}, "aicoco.input", "size"),
        ({"aicoco__input": {"size": [8, 8], "window": [0, 0]}}, "aicoco.input", "window"),
        ({"aicoco__input": {"size": [8, 8], "scale": "max"}}, "aicoco.input", "scale"),
        ({"aicoco__input": {"size": [8, 8], "dims": 4}}, "aicoco.input", "dims"),
        ({"aicoco__input": {"size": [8, 8], "sise": 1}}, "aicoco.input", "sise"),
        ({"aicoco__output": {"threshhold": 0.5}}, "aicoco.output", "threshhold"),
        ({"aicoco__output": {"threshold": 5}}, "aicoco.output", "threshold"),
        ({"aicoco__output": [0.5]}, "aicoco.output", "JSON object"),
        ({"aicoco__outputs": {}}, "aicoco.outputs", "unknown parameter"),
    ],
)
def test_mistakes_name_model_and_parameter(
    overrides: dict[str, object], key: str, fragment: str
) -> None:
    with pytest.raises(InvalidModelConfig) as caught:
        parse_params("lesion_classifier", parameters(**overrides))
    message = caught.value.message
    assert message.startswith(f"model 'lesion_classifier': parameter '{key}'")
    assert fragment in message
    assert caught.value.details == {"model": "lesion_classifier", "parameter": key}
    assert caught.value.status == 500


def test_regression_needs_regressions() -> None:
    with pytest.raises(InvalidModelConfig, match="at least one regression"):
        parse_params("m", parameters(aicoco__task="regression"))


def test_other_parameters_are_ignored() -> None:
    params = dict(parameters(), intra_op_threads="1")
    assert parse_params("m", params).task == "classification"
    assert has_aicoco_parameters(params)
    assert not has_aicoco_parameters({"intra_op_threads": "1"})
