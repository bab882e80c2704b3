"""FLaVor's own tabular and hybrid example requests, unchanged, against the example models.

Each request is posted as FLaVor's clients post it (its files, and each key of ``input.json``
as a JSON field); the answer must have the shape of FLaVor's ``expected.json`` (ids and values
aside), and a tabular answer's records artifact must download with one line per record.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

REQUESTS = Path(__file__).parent / "flavor_requests"
HYBRID_IMAGE = "451c164d-7684-44b1-81b2-956247db765b_20160112_102927.jpg"
RECORD_KEYS = {"id", "table_id", "row_indexes", "category_ids", "regressions"}


def fundus_like_jpeg() -> bytes:
    """An RGB JPEG of the size of FLaVor's (which is not copied: see flavor_requests/README)."""
    rows, cols = np.mgrid[0:1024, 0:1536]
    disc = (rows - 512) ** 2 + (cols - 768) ** 2 < 480**2
    image = np.zeros((1024, 1536, 3), dtype=np.uint8)
    image[disc] = (190, 110, 60)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def flavor_request(folder: str) -> tuple[dict[str, Any], list[tuple[str, tuple[str, bytes]]]]:
    """FLaVor's client form: every top-level key of input.json as a JSON field, and the files
    its entries name."""
    document = json.loads((REQUESTS / folder / "input.json").read_text())
    fields = {key: json.dumps(value) for key, value in document.items()}
    names = [entry["file_name"] for key in ("images", "tables") for entry in document.get(key, [])]
    files = []
    for name in names:
        content = (
            fundus_like_jpeg() if name == HYBRID_IMAGE else (REQUESTS / folder / name).read_bytes()
        )
        files.append(("files", (name, content)))
    return fields, files


def shape(value: Any) -> Any:
    """A document with its values replaced by their kinds: what 'the same shape' compares."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_same_shape(ours: Any, theirs: Any, where: str = "") -> None:
    """Every key of FLaVor's answer is in ours with a value of the same shape; lists have the
    same length. Ours may carry more keys (e.g. a category's ``display``)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{where}: expected an object, got {ours!r}"
        missing = sorted(set(theirs) - set(ours))
        assert not missing, f"{where}: missing {missing}"
        for key, value in theirs.items():
            assert_same_shape(ours[key], value, f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: {ours!r}"
        for index, (mine, item) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_shape(mine, item, f"{where}[{index}]")
    else:
        assert shape(ours) == shape(theirs), f"{where}: {ours!r} vs FLaVor's {theirs!r}"


def check_schema(http: httpx.Client, answer: dict[str, Any], schema: str) -> None:
    """The answer validates against the schema /openapi.json publishes for it."""
    components = http.get("/openapi.json").json()["components"]
    jsonschema.validate(
        answer, {"$ref": f"#/components/schemas/{schema}", "components": components}
    )


def records_of(http: httpx.Client, answer: dict[str, Any]) -> list[dict[str, Any]]:
    records = answer["records"]
    download = http.get(records["href"])
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/x-ndjson"
    assert int(download.headers["content-length"]) == records["bytes"] == len(download.content)
    lines = download.content.decode().splitlines()
    assert len(lines) == records["rows"]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("folder", "model"),
    [("tabular_cls", "wine_quality_classifier"), ("tabular_reg", "house_value_regressor")],
)
def test_flavor_tabular_request(http: httpx.Client, folder: str, model: str) -> None:
    fields, files = flavor_request(folder)
    response = http.post(f"/models/{model}/invocations", data=fields, files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = json.loads((REQUESTS / folder / "expected.json").read_text())
    assert_same_shape(answer, expected)
    assert answer["tables"] == expected["tables"]
    assert [c["name"] for c in answer["categories"]] == [c["name"] for c in expected["categories"]]
    assert [r["name"] for r in answer["regressions"]] == [
        r["name"] for r in expected["regressions"]
    ]
    check_schema(http, answer, "AiCOCOTabularOutput")
    records = records_of(http, answer)
    assert len(records) == 3 == expected["records"]["rows"]
    for record in records:
        check_schema(http, record, "AiRecord")
    category_ids = {c["id"] for c in answer["categories"]}
    regression_ids = {r["id"] for r in answer["regressions"]}
    for row, record in enumerate(records):
        assert set(record) == RECORD_KEYS
        assert record["table_id"] == "table_001"
        assert record["row_indexes"] == [row]
        if folder == "tabular_cls":
            assert len(record["category_ids"]) == 1  # multiclass: one grade per wine
            assert set(record["category_ids"]) <= category_ids
            assert record["regressions"] is None
        else:
            assert record["category_ids"] is None
            (item,) = record["regressions"]
            assert item["regression_id"] in regression_ids
            assert 0.0 < item["value"] < 6.0  # in units of $100,000, as the training data


def test_flavor_hybrid_request(http: httpx.Client) -> None:
    fields, files = flavor_request("hybrid")
    response = http.post("/models/lesion_risk_hybrid/invocations", data=fields, files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = json.loads((REQUESTS / "hybrid" / "expected.json").read_text())
    assert_same_shape(answer, expected)
    check_schema(http, answer, "AiCOCOHybridOutput")
    assert answer["tables"] == expected["tables"]
    (image,) = answer["images"]
    assert image["table_ids"] == ["table_001"]
    assert set(image["category_ids"]) <= {c["id"] for c in answer["categories"]}


def test_records_artifact_is_a_404_outside_its_name_pattern(http: httpx.Client) -> None:
    for name in ("records_short.jsonl", "..%2Fsecret", ".records_" + "a" * 21 + ".jsonl.partial"):
        response = http.get(f"/invocations/artifacts/{name}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] in {"artifact_not_found", "not_found"}


def test_models_lists_what_a_table_model_takes(http: httpx.Client) -> None:
    model = http.get("/models/wine_quality_classifier").json()
    assert model["ready"] and model["task"] == "tabular_classification"
    assert model["table"]["window_size"] == 1
    assert [c["name"] for c in model["table"]["columns"]][:2] == [
        "fixed acidity",
        "volatile acidity",
    ]
    assert [c["name"] for c in model["categories"]] == ["3", "4", "5", "6", "7", "8"]
    hybrid = http.get("/models/lesion_risk_hybrid").json()
    assert hybrid["task"] == "hybrid_classification" and len(hybrid["table"]["columns"]) == 22


def test_the_send_command_posts_tables_and_saves_the_records(
    http: httpx.Client, tmp_path: Path
) -> None:
    table = REQUESTS / "tabular_cls" / "test_cls.csv"
    records = tmp_path / "records.jsonl"
    url = str(http.base_url)
    base = [sys.executable, "-m", "gateway", "send", "--url", url]
    done = subprocess.run(
        [*base, "--model", "wine_quality_classifier", "--records", str(records), str(table)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"]["rows"] == 3
    assert len(records.read_text().splitlines()) == 3
    image = tmp_path / "eye.jpg"
    image.write_bytes(fundus_like_jpeg())
    clinical = REQUESTS / "hybrid" / "test_cls.csv"
    hybrid = subprocess.run(
        [*base, "--model", "lesion_risk_hybrid", str(image), str(clinical)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert hybrid.returncode == 0, hybrid.stderr
    (entry,) = json.loads(hybrid.stdout)["images"]
    assert len(entry["category_ids"]) == 1 and entry["table_ids"]
