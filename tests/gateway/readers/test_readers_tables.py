"""Tables read as declared: round trips at real sizes, and refusals naming file, line, column."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import (
    ApiError,
    InvalidTable,
    TableColumnMismatch,
    TableTooLarge,
    TableValueError,
    UnsupportedTableFormat,
)
from gateway.inference import Upload
from gateway.readers.tables import Column, TableLimits, TableReader, read_table

LIMITS = TableLimits(max_bytes=64 * 1024**2, max_rows=2_000_000, max_columns=64, max_cell_chars=64)


def upload(folder: Path, content: bytes, name: str = "t.csv") -> Upload:
    path = folder / name
    path.write_bytes(content)
    return Upload(name, path, len(content))


def write(values: np.ndarray, names: list[str], order: list[int], delimiter: str = ",") -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
    writer.writerow([names[i] for i in order])
    for row in values:
        writer.writerow([repr(float(row[i])) for i in order])
    return text.getvalue().encode()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.sampled_from([1, 7, 8191, 8192, 8193, 30_000]),
    columns=st.integers(1, 24),
    seed=st.integers(0, 2**16),
    tsv=st.booleans(),
)
def test_any_column_order_reads_back_in_the_declared_order(
    tmp_path: Path, rows: int, columns: int, seed: int, tsv: bool
) -> None:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(rows, columns)) * 10.0 ** rng.integers(-3, 6, columns)).astype(
        np.float32
    )
    names = [f"col {i}" for i in range(columns)]
    order = list(rng.permutation(columns))
    delimiter, name = ("\t", "t.tsv") if tsv else (",", "t.csv")
    table = upload(tmp_path, write(values, names, order, delimiter), name)
    with TableReader(table, [Column(n) for n in names], LIMITS) as reader:
        chunks = list(reader.chunks(rows=8192))
    assert all(len(chunk) <= 8192 for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), values)


def test_a_million_rows_stream_in_chunks(tmp_path: Path) -> None:
    """Clinical size: the reader's memory is one chunk whatever the table."""
    row = ",".join(["1.5"] * 8)
    table = upload(tmp_path, ("h0,h1,h2,h3,h4,h5,h6,h7\n" + (row + "\n") * 1_000_000).encode())
    with TableReader(table, [Column(f"h{i}") for i in range(8)], LIMITS) as reader:
        sizes = [len(chunk) for chunk in reader.chunks()]
    assert sum(sizes) == 1_000_000 and max(sizes) == 8192


def test_types_bom_blank_lines_and_quoting(tmp_path: Path) -> None:
    content = '\ufeffa,flag,n\n"1,5e0",TRUE,3\n-2,no,4\n\n'.replace("1,5e0", "1.5e0")
    columns = [Column("a"), Column("flag", "bool"), Column("n", "int")]
    values = read_table(upload(tmp_path, content.encode()), columns, LIMITS)
    np.testing.assert_array_equal(values, [[1.5, 1.0, 3.0], [-2.0, 0.0, 4.0]])


BAD = [
    ("a,b\n1,2\n", [Column("a"), Column("c")], TableColumnMismatch, {}),
    ("a,b,c\n1,2,3\n", [Column("a"), Column("b")], TableColumnMismatch, {}),
    ("a,a,b\n1,2,3\n", [Column("a"), Column("b")], TableColumnMismatch, {}),
    ("a,b\n1,x\n", [Column("a"), Column("b")], TableValueError, {"line": 2, "column": "b"}),
    ("a,b\n1,\n", [Column("a"), Column("b")], TableValueError, {"line": 2, "column": "b"}),
    ("a,b\n1,inf\n", [Column("a"), Column("b")], TableValueError, {"line": 2}),
    ("a,b\n1,2.5\n", [Column("a"), Column("b", "int")], TableValueError, {"column": "b"}),
    ("a,b\n1,maybe\n", [Column("a"), Column("b", "bool")], TableValueError, {"line": 2}),
    ("a,b\n", [Column("a"), Column("b")], InvalidTable, {}),
    ("\n", [Column("a")], InvalidTable, {}),
    ("a,b\n1,2\n3\n", [Column("a"), Column("b")], InvalidTable, {"line": 3}),
    ('a,b\n"1,2\n', [Column("a"), Column("b")], InvalidTable, {}),
]


@pytest.mark.parametrize(("content", "columns", "error", "details"), BAD)
def test_refusals_name_the_file_line_and_column(
    tmp_path: Path,
    content: str,
    columns: list[Column],
    error: type[ApiError],
    details: dict[str, object],
) -> None:
    with pytest.raises(error) as raised:
        read_table(upload(tmp_path, content.encode()), columns, LIMITS)
    assert raised.value.details["file_name"] == "t.csv"
    assert "'t.csv'" in raised.value.message
    for key, value in details.items():
        assert raised.value.details[key] == value


def test_blank_lines_are_skipped_but_empty_cells_are_not(tmp_path: Path) -> None:
    """A blank line is no row, even in a one-column table; ``,`` is a row of empty cells."""
    values = read_table(upload(tmp_path, b"a\n1\n\n2\n\n"), [Column("a")], LIMITS)
    np.testing.assert_array_equal(values, [[1.0], [2.0]])
    with pytest.raises(TableValueError, match="empty cell"):
        read_table(upload(tmp_path, b"a,b\n1,2\n,\n"), [Column("a"), Column("b")], LIMITS)


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidTable, match="not UTF-8"):
        read_table(upload(tmp_path, "a\n\u00e9\n".encode("latin-1")), [Column("a")], LIMITS)


@pytest.mark.parametrize("name", ["t.xlsx", "t.xls", "t.ods", "t.json", "t"])
def test_only_csv_and_tsv(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsupportedTableFormat, match="CSV"):
        TableReader(upload(tmp_path, b"a\n1\n", name), [Column("a")], LIMITS)


@pytest.mark.parametrize(
    ("limits", "content"),
    [
        (TableLimits(10, 100, 100, 100), b"a\n" + b"1\n" * 10),
        (TableLimits(10**6, 3, 100, 100), b"a\n" + b"1\n" * 4),
        (TableLimits(10**6, 100, 2, 100), b"a,b,c\n1,2,3\n"),
        (TableLimits(10**6, 100, 100, 3), b"a\n12345\n"),
    ],
)
def test_bounds(tmp_path: Path, limits: TableLimits, content: bytes) -> None:
    columns = [Column(n) for n in content.split(b"\n")[0].decode().split(",")]
    with pytest.raises(TableTooLarge):
        read_table(upload(tmp_path, content), columns, limits)
