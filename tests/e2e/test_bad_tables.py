"""The bad-table matrix, over real HTTP against a real Triton and the example models.

Every case gets its documented status and error code, names the file (and the line and column
where there is one), leaves nothing behind (no upload, no records artifact, no partial file),
and the gateway keeps serving: a good table is answered after each case. The records store's
retention and size cap are checked against the same gateway.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StartGateway
from tests.e2e.test_flavor_requests import fundus_like_jpeg
from training.tables import CLINICAL_COLUMNS, WINE_COLUMNS
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

WINE = "wine_quality_classifier"
HYBRID = "lesion_risk_hybrid"
ROW = "7.4,0.7,0.0,1.9,0.076,11.0,34.0,0.9978,3.51,0.56,9.4"
HEADER = ",".join(WINE_COLUMNS)
CLINICAL_ROW = (
    "67.41,0,148.0,50.4,23.01,0,0,0,135,88,6.2,119,0.77,74.682,84.285,16,153,62.6,72.4,48,9.87,1"
)
LIMITS = {
    "MAX_TABLE_ROWS": "50000",
    "MAX_TABLE_COLUMNS": "32",
    "MAX_TABLE_CELL_CHARS": "64",
    "MAX_TABLE_BYTES": "4MiB",
}


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def many_rows(count: int, bad_at: int | None = None) -> bytes:
    rows = [ROW] * count
    if bad_at is not None:
        rows[bad_at] = ROW.replace("9.4", "ten")
    return csv(HEADER, *rows)


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str
    table: bytes = csv(HEADER, ROW)
    file_name: str = "t.csv"
    fields: dict[str, Any] = field(default_factory=dict)
    model: str = WINE
    details: dict[str, Any] = field(default_factory=dict)
    image: bool = False


CASES = [
    Case("missing column", 422, "table_columns", csv(HEADER.replace(",alcohol", ""), ROW[:-4])),
    Case("extra column", 422, "table_columns", csv(HEADER + ",colour", ROW + ",red")),
    Case("repeated column", 422, "table_columns", csv(HEADER + ",pH", ROW + ",3.3")),
    Case(
        "text in a number column",
        422,
        "table_value",
        csv(HEADER, ROW, ROW.replace("3.51", "acidic")),
        details={"line": 3, "column": "pH"},
    ),
    Case(
        "empty cell",
        422,
        "table_value",
        csv(HEADER, ROW.replace("0.56", "")),
        details={"line": 2, "column": "sulphates"},
    ),
    Case("NaN cell", 422, "table_value", csv(HEADER, ROW.replace("9.4", "nan"))),
    Case("empty file", 422, "unreadable_file", b""),
    Case("header only", 422, "invalid_table", csv(HEADER)),
    Case("no header", 422, "invalid_table", b"\n\n"),
    Case("short row", 422, "invalid_table", csv(HEADER, ROW, ROW[:-4]), details={"line": 3}),
    Case("long row", 422, "invalid_table", csv(HEADER, ROW + ",1")),
    Case("not UTF-8", 422, "invalid_table", csv(HEADER, ROW).replace(b"pH", b"p\xc9")),
    Case("unclosed quote", 422, "invalid_table", csv(HEADER, '"7.4,0.7', ROW)),
    Case("spreadsheet", 415, "unsupported_table_format", b"PK\x03\x04", file_name="t.xlsx"),
    Case("unknown extension", 415, "unsupported_table_format", file_name="t.dat"),
    Case(
        "entry names another file",
        422,
        "file_mismatch",
        fields={"tables": [{"id": "a", "file_name": "other.csv"}]},
    ),
    Case("window_size differs", 422, "table_window", fields={"meta": {"window_size": 2}}),
    Case("no meta", 422, "invalid_aicoco", fields={"meta": None}),
    Case("window_size 0", 422, "invalid_aicoco", fields={"meta": {"window_size": 0}}),
    Case("tables not a list", 422, "invalid_aicoco", fields={"tables": {"id": "a"}}),
    Case(
        "repeated table id",
        422,
        "invalid_aicoco",
        fields={"tables": [{"id": "a", "file_name": "t.csv"}, {"id": "a", "file_name": "u.csv"}]},
    ),
    Case("tables to an image model", 422, "wrong_input_kind", model="lesion_classifier"),
    Case("images to a tabular model", 422, "wrong_input_kind", image=True),
    Case("a DICOM answer of a tabular model", 400, "invalid_parameter", fields={"output": "sr"}),
    Case("too many rows", 413, "table_too_large", many_rows(50_001)),
    Case("too many columns", 413, "table_too_large", csv(",".join(f"c{i}" for i in range(40)))),
    Case("a cell too long", 413, "table_too_large", csv(HEADER, ROW.replace("9.4", "9" * 80))),
    Case("file too large", 413, "table_too_large", csv(HEADER, *[ROW + " " * 8] * 70_000)),
    Case(
        "bad cell in a later chunk",
        422,
        "table_value",
        many_rows(30_000, bad_at=20_000),
        details={"line": 20_002, "column": "alcohol"},
    ),
    Case(
        "hybrid table of two rows",
        422,
        "table_window",
        csv(",".join(CLINICAL_COLUMNS), CLINICAL_ROW, CLINICAL_ROW),
        model=HYBRID,
        image=True,
    ),
    Case(
        "hybrid fraction in an integer column",
        422,
        "table_value",
        csv(",".join(CLINICAL_COLUMNS), CLINICAL_ROW.replace(",0,148.0", ",0.5,148.0")),
        model=HYBRID,
        image=True,
        details={"column": "GENDER"},
    ),
    Case(
        "hybrid image without table_ids",
        422,
        "wrong_input_kind",
        csv(",".join(CLINICAL_COLUMNS), CLINICAL_ROW),
        model=HYBRID,
        image=True,
        fields={"images": [{"id": "i", "file_name": "eye.jpg", "index": 0}]},
    ),
]


@pytest.fixture(scope="module")
def gateway(
    triton: LocalTriton, start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Path, Path]]:
    records = tmp_path_factory.mktemp("records")
    url, uploads = start_gateway(
        triton.grpc_url,
        {
            **LIMITS,
            "RECORDS_DIR": str(records),
            "RECORDS_RETENTION_S": "3",
            "RECORDS_MAX_BYTES": "2000",
        },
    )
    with httpx.Client(base_url=url, timeout=300.0) as client:
        yield client, uploads, records


def post(client: httpx.Client, case: Case) -> httpx.Response:
    fields: dict[str, Any] = {
        "tables": [{"id": "table_001", "file_name": case.file_name}],
        "meta": {"window_size": 1},
    }
    files = [("files", (case.file_name, case.table))]
    if case.image:
        fields["images"] = [
            {"id": "i", "file_name": "eye.jpg", "index": 0, "table_ids": ["table_001"]}
        ]
        files.append(("files", ("eye.jpg", fundus_like_jpeg())))
    fields.update(case.fields)
    output = fields.pop("output", None)
    data = {key: json.dumps(value) for key, value in fields.items() if value is not None}
    params = {"output": output} if output else None
    return client.post(f"/models/{case.model}/invocations", data=data, files=files, params=params)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_table(gateway: tuple[httpx.Client, Path, Path], case: Case) -> None:
    client, uploads, records = gateway
    before = [p.name for p in records.iterdir()]
    response = post(client, case)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code, error
    for key, value in case.details.items():
        assert error["details"][key] == value, error
    if case.code in {"invalid_table", "table_columns", "table_value", "table_too_large"}:
        assert case.file_name in error["message"], error
        assert error["details"]["file_name"] == case.file_name, error
    assert list(uploads.iterdir()) == []
    # No artifact and no partial file; the sweep may have removed older ones meanwhile.
    assert set(p.name for p in records.iterdir()) <= set(before)
    good = post(client, Case("good", 200, ""))
    assert good.status_code == 200, good.text


def test_artifacts_expire_and_stay_under_the_cap(gateway: tuple[httpx.Client, Path, Path]) -> None:
    """RECORDS_MAX_BYTES 2000 holds about four 3-row answers; RECORDS_RETENTION_S is 3."""
    client, _, records = gateway
    table = csv(HEADER, ROW, ROW, ROW)
    hrefs = []
    for _ in range(8):
        response = post(client, Case("good", 200, "", table))
        assert response.status_code == 200, response.text
        hrefs.append(response.json()["records"]["href"])
    sizes = [p.stat().st_size for p in records.iterdir()]
    assert sum(sizes) <= 2000 and len(sizes) >= 3
    assert client.get(hrefs[-1]).status_code == 200  # the newest are kept
    assert client.get(hrefs[0]).status_code == 404  # the oldest went first
    time.sleep(3.5)
    response = post(client, Case("good", 200, "", table))
    newest = response.json()["records"]["href"]
    assert [p.name for p in records.iterdir()] == [newest.rsplit("/", 1)[1]]
    assert client.get(hrefs[-1]).json()["error"]["code"] == "artifact_not_found"
    assert io.BytesIO(client.get(newest).content).read().count(b"\n") == 3
