"""The tabular and hybrid example models: their folders follow their cards, their ONNX files
their configs, and their held-out figures beat the baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gateway.pipelines.params import TabularClassificationOutput
from gateway.pipelines.tasks import parse_table_params
from training.table_cards import TABLE_CARDS, render_table_config, render_table_readme
from training.tables import housing_table, wine_table

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
NAMES = sorted(TABLE_CARDS)


def _record(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((REPOSITORY / name / "metrics.json").read_text())
    return record


def _session(name: str) -> ort.InferenceSession:
    path = REPOSITORY / name / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", NAMES)
def test_folder_is_what_the_card_renders(name: str) -> None:
    folder = REPOSITORY / name
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["1/model.onnx", "README.md", "config.pbtxt", "metrics.json"]
    assert (folder / "1" / "model.onnx").stat().st_size < 2 * 1024 * 1024
    card = TABLE_CARDS[name]
    assert (folder / "config.pbtxt").read_text() == render_table_config(card)
    assert (folder / "README.md").read_text() == render_table_readme(card, _record(name))


@pytest.mark.parametrize("name", NAMES)
def test_parameters_are_what_the_gateway_accepts(name: str) -> None:
    card = TABLE_CARDS[name]
    params = parse_table_params(name, card.parameters())
    assert [column.name for column in params.table.columns] == [c for c, _ in card.columns]
    assert params.task == card.task
    assert (params.input is not None) == (card.image_size is not None)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_matches_the_card(name: str) -> None:
    card = TABLE_CARDS[name]
    model = onnx.load(str(REPOSITORY / name / "1" / "model.onnx"))
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    session = _session(name)
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [
        (spec.name, list(spec.dims)) for spec in card.inputs
    ]
    assert [(o.name, o.shape[1:]) for o in session.get_outputs()] == [
        (spec.name, list(spec.dims)) for spec in card.outputs
    ]


BEATS = {
    # metric, the model's at least (or at most, for errors), and the margin over the baseline
    "wine_quality_classifier": [("accuracy", 0.7, 0.2), ("macro_recall", 0.5, 0.3)],
    "house_value_regressor": [("r2", 0.8, 0.8), ("mae", 0.35, 0.3)],
    "lesion_risk_hybrid": [("auc", 0.9, 0.08), ("accuracy", 0.8, 0.1)],
    "breast_cancer_classifier": [("auc", 0.97, 0.4), ("accuracy", 0.93, 0.3)],
    "diabetes_progression_regressor": [("r2", 0.3, 0.3), ("mae", 55.0, 10.0)],
}
"""What each README claims, against the figures its metrics.json records (a retrain that does
worse fails here)."""


@pytest.mark.parametrize("name", NAMES)
def test_the_model_beats_its_baseline(name: str) -> None:
    held_out = _record(name)["held_out"]
    model, baseline = held_out["model"], held_out["baseline"]
    for metric, bound, margin in BEATS[name]:
        if metric in {"mae", "rmse"}:
            assert model[metric] <= bound and model[metric] <= baseline[metric] - margin, metric
        else:
            assert model[metric] >= bound and model[metric] >= baseline[metric] + margin, metric


def test_the_committed_figures_are_measured_again() -> None:
    """The classifier's and the regressor's held-out figures, re-measured from their tables
    (the same seeds as training) through the committed ONNX files."""
    wine = wine_table(TABLE_CARDS["wine_quality_classifier"].seed + 1000, 3000)
    probabilities = _session("wine_quality_classifier").run(
        None, {"features": wine.values[:, None]}
    )
    accuracy = float((probabilities[0].argmax(axis=1) == wine.target).mean())
    recorded = _record("wine_quality_classifier")["held_out"]["model"]["accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-6)
    spec = parse_table_params(
        "wine_quality_classifier", TABLE_CARDS["wine_quality_classifier"].parameters()
    ).output
    assert isinstance(spec, TabularClassificationOutput) and spec.mode == "argmax"
    houses = housing_table(TABLE_CARDS["house_value_regressor"].seed + 1000, 3000)
    values = _session("house_value_regressor").run(None, {"features": houses.values[:, None]})
    mae = float(np.abs(values[0][:, 0] - houses.target).mean())
    assert mae == pytest.approx(
        _record("house_value_regressor")["held_out"]["model"]["mae"], rel=1e-4
    )
