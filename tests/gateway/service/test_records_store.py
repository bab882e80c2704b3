"""The records store: atomic artifacts, names it serves, retention and the size cap."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.records import HREF_PREFIX, RecordsStore


def store(folder: Path, retention_s: float = 60.0, max_bytes: int = 10_000) -> RecordsStore:
    return RecordsStore(folder / "records", retention_s=retention_s, max_bytes=max_bytes)


def write(records: RecordsStore, size: int = 100) -> Path:
    with records.writer() as writer:
        writer.write(b"x" * (size - 1) + b"\n", 1)
    return writer.final


def test_an_artifact_appears_whole_with_its_reference(tmp_path: Path) -> None:
    records = store(tmp_path)
    with records.writer() as writer:
        writer.write(b'{"a":1}\n', 1)
        writer.write(b'{"a":2}\n{"a":3}\n', 2)
        assert not writer.final.exists()  # only the hidden partial file while writing
        assert [p.name.startswith(".records_") for p in records.folder.iterdir()] == [True]
    reference = writer.reference()
    assert reference.href == HREF_PREFIX + writer.name
    assert (reference.rows, reference.bytes) == (3, 24)
    assert records.path(writer.name) == writer.final
    assert writer.final.read_bytes().count(b"\n") == 3


def test_a_failed_answer_leaves_nothing(tmp_path: Path) -> None:
    records = store(tmp_path)
    with pytest.raises(RuntimeError), records.writer() as writer:
        writer.write(b"partial\n", 1)
        raise RuntimeError("the model failed half way")
    assert list(records.folder.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    [
        "records_short.jsonl",
        "../records_abcdefghijklmnopqrstu.jsonl",
        ".records_abcdefghijklmnopqrstu.jsonl.partial",
        "records_abcdefghijklmnopqrstu.json",
        "records_abcdefghijklmnopqrs/u.jsonl",
        "other_abcdefghijklmnopqrstu.jsonl",
    ],
)
def test_names_outside_the_pattern_are_never_served(tmp_path: Path, name: str) -> None:
    records = store(tmp_path)
    (records.folder / "other_abcdefghijklmnopqrstu.jsonl").write_text("secret")
    assert records.path(name) is None


def test_retention_removes_the_old(tmp_path: Path) -> None:
    records = store(tmp_path, retention_s=100)
    old, new = write(records), write(records)
    now = old.stat().st_mtime
    os.utime(old, (now - 101, now - 101))
    result = records.sweep(now=now)
    assert (result.removed, result.kept) == (1, 1)
    assert not old.exists() and new.exists()


def test_the_cap_removes_the_oldest_first_but_keeps_the_newest(tmp_path: Path) -> None:
    records = store(tmp_path, max_bytes=250)
    paths = []
    start = time.time() - 40
    for age in range(4):
        path = write(records)
        os.utime(path, (start + age, start + age))
        paths.append(path)
    records.sweep()
    assert [p.exists() for p in paths] == [False, False, True, True]
    huge = write(records, size=1000)  # alone over the cap: kept, as its href is being answered
    assert huge.exists() and sum(p.exists() for p in paths) == 0


def test_stale_partial_files_of_a_crashed_process_are_removed(tmp_path: Path) -> None:
    records = store(tmp_path)
    partial = records.folder / ".records_abcdefghijklmnopqrstu.jsonl.partial"
    partial.write_text("half")
    now = partial.stat().st_mtime
    records.sweep(now=now + 60)
    assert partial.exists()  # may be a live writer
    records.sweep(now=now + 2 * 86400)
    assert not partial.exists()


def test_other_files_in_the_folder_are_left_alone(tmp_path: Path) -> None:
    records = store(tmp_path, retention_s=1)
    mine = records.folder / "notes.txt"
    mine.write_text("operator's")
    records.sweep(now=mine.stat().st_mtime + 100)
    assert mine.exists()
