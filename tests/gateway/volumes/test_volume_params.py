"""The volumetric parameters: what a config may say, and the error for what it may not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import InvalidModelConfig
from gateway.pipelines.params import (
    RangeIntensity,
    VolumeParams,
    VolumeZScoreIntensity,
    ZScoreIntensity,
    parse,
)
from gateway.pipelines.tasks import TASKS
from tests.volumetric import VolumeModel

VOLUME = TASKS["volumetric_segmentation"].spec


def parameters(**changes: Any) -> dict[str, str]:
    texts = VolumeModel().parameter_texts()
    for key, value in changes.items():
        name = "aicoco." + key
        if value is None:
            texts.pop(name)
        else:
            texts[name] = value if isinstance(value, str) else json.dumps(value)
    return texts


def test_the_documented_example_parses_with_monais_defaults() -> None:
    params = parse("m", parameters(sliding_window={"roi": [32, 96, 96]}), VOLUME)
    assert isinstance(params, VolumeParams)
    window = params.window
    assert (window.overlap, window.blend, window.sigma_scale) == (0.25, "constant", 0.125)
    assert (window.batch, window.padding, window.mirror_axes) == (None, "constant", ())
    assert (params.output.activation, params.output.decision) == ("softmax", "argmax")
    assert isinstance(params.input.intensity, RangeIntensity)


@pytest.mark.parametrize(
    ("intensity", "kind"),
    [
        ({"kind": "zscore", "mean": 80, "std": 120, "clip": [-1000, 1500]}, ZScoreIntensity),
        ({"kind": "volume_zscore"}, VolumeZScoreIntensity),
    ],
)
def test_each_intensity_kind(intensity: dict[str, Any], kind: type) -> None:
    params = parse("m", parameters(input={"intensity": intensity}), VOLUME)
    assert isinstance(params, VolumeParams) and isinstance(params.input.intensity, kind)
    assert params.input.spacing is None


@pytest.mark.parametrize(
    ("changes", "key", "problem"),
    [
        ({"sliding_window": None}, "aicoco.sliding_window", "is required"),
        ({"sliding_window": {"roi": [8, 8]}}, "aicoco.sliding_window", "roi"),
        (
            {"sliding_window": {"roi": [8, 8, 8], "overlap": 1.0}},
            "aicoco.sliding_window",
            "overlap",
        ),
        (
            {"sliding_window": {"roi": [8, 8, 8], "mirror_axes": [0, 0]}},
            "aicoco.sliding_window",
            "duplicate",
        ),
        (
            {"sliding_window": {"roi": [8, 8, 8], "blend": "cosine"}},
            "aicoco.sliding_window",
            "blend",
        ),
        ({"input": {"spacing": [1, 0, 1]}}, "aicoco.input", "spacing"),
        (
            {"input": {"intensity": {"kind": "range", "a_min": 5, "a_max": 5}}},
            "aicoco.input",
            "differ",
        ),
        ({"input": {"intensity": {"kind": "gamma"}}}, "aicoco.input", "kind"),
        ({"input": {"size": [64, 64]}}, "aicoco.input", "size"),
        ({"output": {"decision": "max"}}, "aicoco.output", "decision"),
        ({"table": {"columns": [{"name": "age"}]}}, "aicoco.table", "tabular"),
    ],
)
def test_a_wrong_parameter_is_the_models_configuration_error(
    changes: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(InvalidModelConfig, match=problem) as refused:
        parse("m", parameters(**changes), VOLUME)
    assert refused.value.details == {"model": "m", "parameter": key}


def test_a_sliding_window_on_a_2d_task_is_refused() -> None:
    texts = {
        "aicoco.task": "segmentation",
        "aicoco.categories": json.dumps([{"name": "a"}]),
        "aicoco.input": json.dumps({"size": [64, 64]}),
        "aicoco.sliding_window": json.dumps({"roi": [8, 8, 8]}),
    }
    with pytest.raises(InvalidModelConfig, match="is for volumetric models"):
        parse("m", texts, TASKS["segmentation"].spec)
