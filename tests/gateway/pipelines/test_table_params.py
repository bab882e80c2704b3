"""``aicoco.table`` and the tabular and hybrid tasks: parsed, or refused naming the parameter."""

from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidModelConfig
from gateway.pipelines.params import TabularClassificationOutput
from gateway.pipelines.tasks import parse_params, parse_table_params

TABLE = json.dumps({"columns": [{"name": "age", "dtype": "int"}, {"name": "bmi"}]})
IMAGE = json.dumps({"size": [64, 64]})


def params(**values: str) -> dict[str, str]:
    base = {
        "aicoco.task": "tabular_classification",
        "aicoco.categories": json.dumps([{"name": "yes"}]),
        "aicoco.table": TABLE,
    }
    base.update(values)
    return {key: value for key, value in base.items() if value}


def test_a_tabular_classifier() -> None:
    parsed = parse_table_params("m", params(**{"aicoco.output": '{"mode": "argmax"}'}))
    assert [c.name for c in parsed.table.columns] == ["age", "bmi"]
    assert [c.dtype for c in parsed.table.reader_columns()] == ["int", "float"]
    assert parsed.table.window_size == 1 and parsed.input is None
    assert isinstance(parsed.output, TabularClassificationOutput)
    assert parsed.output.mode == "argmax"


def test_a_hybrid_model_needs_both_the_table_and_the_image() -> None:
    hybrid = params(**{"aicoco.task": "hybrid_classification", "aicoco.input": IMAGE})
    assert parse_table_params("m", hybrid).input is not None
    without = params(**{"aicoco.task": "hybrid_classification"})
    with pytest.raises(InvalidModelConfig, match=r"'aicoco\.input' is required"):
        parse_table_params("m", without)


@pytest.mark.parametrize(
    ("values", "parameter", "problem"),
    [
        ({"aicoco.table": ""}, "aicoco.table", "is required"),
        ({"aicoco.table": '{"columns": []}'}, "aicoco.table", "at least 1"),
        (
            {"aicoco.table": '{"columns": [{"name": "a"}, {"name": "a"}]}'},
            "aicoco.table",
            "duplicate column",
        ),
        (
            {"aicoco.table": '{"columns": [{"name": "a", "dtype": "text"}]}'},
            "aicoco.table",
            "dtype",
        ),
        ({"aicoco.table": '{"columns": [{"name": "a"}], "window": 2}'}, "aicoco.table", "window"),
        ({"aicoco.input": IMAGE}, "aicoco.input", "reads only its table"),
        ({"aicoco.categories": ""}, "aicoco.categories", "at least one category"),
        ({"aicoco.output": '{"mode": "vote"}'}, "aicoco.output", "mode"),
        ({"aicoco.tabel": "{}"}, "aicoco.tabel", "unknown parameter"),
    ],
)
def test_mistakes_name_the_parameter(values: dict[str, str], parameter: str, problem: str) -> None:
    with pytest.raises(InvalidModelConfig, match=problem) as raised:
        parse_table_params("m", params(**values))
    assert raised.value.details == {"model": "m", "parameter": parameter}


def test_an_image_model_refuses_a_table() -> None:
    image = {
        "aicoco.task": "classification",
        "aicoco.categories": '[{"name": "a"}]',
        "aicoco.input": IMAGE,
        "aicoco.table": TABLE,
    }
    with pytest.raises(InvalidModelConfig, match="reads images"):
        parse_params("m", image)
    with pytest.raises(InvalidModelConfig, match="tabular_classification"):
        parse_params("m", {**image, "aicoco.task": "tables"})
