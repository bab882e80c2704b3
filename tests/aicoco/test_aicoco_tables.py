"""Records as JSON Lines, window by window, and the tabular documents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aicoco import AiCOCOFormatError, IdGenerator, build_categories, build_regressions
from aicoco.tables import AiCOCOTabularOutput, AiRecord, AiRecords, RecordBuilder


def test_classification_records_continue_across_batches() -> None:
    ids = IdGenerator(seed=1)
    categories = build_categories([{"name": "a"}, {"name": "b", "supercategory_name": "s"}], ids)
    builder = RecordBuilder('table "1"', 2, categories=categories, declared_categories=2, ids=ids)
    first = builder.lines(np.array([[1, 0], [1, 1]]))
    second = builder.lines(np.array([[0, 0]], dtype=bool))
    records = [AiRecord.model_validate_json(line) for line in (first + second).splitlines()]
    assert [r.row_indexes for r in records] == [[0, 1], [2, 3], [4, 5]]
    assert [r.category_ids for r in records] == [
        [categories[0].id],
        [categories[0].id, categories[1].id],
        [],
    ]
    assert all(r.table_id == 'table "1"' and r.regressions is None for r in records)
    assert len({r.id for r in records}) == 3


def test_regression_records_and_their_refusals() -> None:
    ids = IdGenerator(seed=2)
    regressions = build_regressions([{"name": "v", "unit": "mm"}], ids)
    builder = RecordBuilder("t", 1, regressions=regressions, declared_regressions=1, ids=ids)
    (line,) = builder.lines(np.array([2.5], dtype=np.float32)).splitlines()
    assert json.loads(line)["regressions"] == [{"regression_id": regressions[0].id, "value": 2.5}]
    with pytest.raises(AiCOCOFormatError, match="finite"):
        builder.lines(np.array([[np.nan]]))
    with pytest.raises(AiCOCOFormatError, match="shape"):
        builder.lines(np.zeros((2, 3)))


def test_the_tabular_document_is_flavors() -> None:
    document = AiCOCOTabularOutput.model_validate(
        {
            "tables": [{"id": "t", "file_name": "t.csv", "site": "A"}],
            "records": AiRecords(href="/invocations/artifacts/x", rows=1, bytes=2),
            "meta": {"window_size": 1, "task_type": "binary"},
        }
    )
    body = json.loads(document.to_json_bytes())
    assert set(body) == {"tables", "categories", "regressions", "records", "meta"}
    assert body["records"]["format"] == "jsonl"
    assert body["tables"][0]["site"] == "A" and body["meta"]["task_type"] == "binary"
