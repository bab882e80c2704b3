"""The tabular example models over HTTP: the held-out rows of the real data sets they were
trained on, posted as CSV to the real gateway and Triton, give the figures their READMEs state."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from training.table_cards import TABLE_CARDS
from training.tables import BREAST_CANCER, DIABETES, Table, bundled_table, split

pytestmark = pytest.mark.e2e

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def held_out(model: str, table: str) -> Table:
    return split(bundled_table(table), TABLE_CARDS[model].seed, 0.25)[1]


def post_table(http: httpx.Client, model: str, table: Table) -> list[dict[str, Any]]:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    order = list(reversed(table.columns))  # the gateway reorders columns by name
    writer.writerow(order)
    for row in table.values:
        by_name = dict(zip(table.columns, row.tolist(), strict=True))
        writer.writerow([repr(by_name[name]) for name in order])
    response = http.post(
        f"/models/{model}/invocations",
        data={
            "tables": json.dumps([{"id": "held_out", "file_name": "rows.csv"}]),
            "meta": json.dumps({"window_size": 1}),
        },
        files=[("files", ("rows.csv", text.getvalue().encode()))],
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    download = http.get(answer["records"]["href"])
    assert download.status_code == 200
    records = [json.loads(line) for line in download.text.splitlines()]
    assert [r["row_indexes"] for r in records] == [[i] for i in range(len(table.target))]
    return [{"answer": answer, **record} for record in records]


def recorded(model: str) -> dict[str, float]:
    metrics: dict[str, float] = json.loads((REPOSITORY / model / "metrics.json").read_text())[
        "held_out"
    ]["model"]
    return metrics


def test_breast_cancer_classifier_over_http(http: httpx.Client) -> None:
    model = "breast_cancer_classifier"
    table = held_out(model, BREAST_CANCER)
    records = post_table(http, model, table)
    malignant = records[0]["answer"]["categories"][0]["id"]
    predicted = np.array([record["category_ids"] == [malignant] for record in records])
    assert all(record["category_ids"] in ([], [malignant]) for record in records)
    accuracy = float((predicted == (table.target == 1)).mean())
    assert accuracy == pytest.approx(recorded(model)["accuracy"], abs=1e-9)


def test_diabetes_regressor_over_http(http: httpx.Client) -> None:
    model = "diabetes_progression_regressor"
    table = held_out(model, DIABETES)
    records = post_table(http, model, table)
    values = np.array([record["regressions"][0]["value"] for record in records])
    mae = float(np.abs(values - table.target).mean())
    assert mae == pytest.approx(recorded(model)["mae"], rel=1e-4)
