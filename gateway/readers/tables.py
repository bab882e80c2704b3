"""Uploaded tables (CSV, TSV) into typed float32 columns, streamed in chunks of rows.

A model declares its columns and their types; a table is checked against them as it is read,
and a problem is a 4xx that names the file, the line (1-based, as an editor shows it; the header
is line 1) and the column, never a 500 or a silently wrong number. Only CSV (``.csv``) and TSV
(``.tsv``) in UTF-8 (with or without a byte-order mark) are read: a spreadsheet is refused with
a 415 that says to export it, because a workbook's types, formulas and sheets have no single
reading a clinician would agree on.

Reading is incremental: :meth:`TableReader.chunks` parses a few thousand rows at a time, so a
table of a million rows costs one chunk of memory, not the whole table. The header and the whole
first chunk are checked before anything is returned, and every later chunk before it is handed
out, so a bad cell stops the request at the chunk that holds it. A file without quote
characters (most exports of numbers) is split line by line (:class:`PlainRows`); one with
quotes goes through the :mod:`csv` module, which knows quoted delimiters and line breaks.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from gateway.errors import (
    ApiError,
    InvalidTable,
    TableColumnMismatch,
    TableTooLarge,
    TableValueError,
    UnsupportedTableFormat,
)
from gateway.inference import Upload
from gateway.settings import Settings

RAISES: tuple[type[ApiError], ...] = (
    UnsupportedTableFormat,
    TableTooLarge,
    InvalidTable,
    TableColumnMismatch,
    TableValueError,
)
"""What reading a request's tables can raise."""

ColumnType = Literal["float", "int", "bool"]
DELIMITERS = {".csv": ",", ".tsv": "\t"}
SPREADSHEETS = frozenset({".xlsx", ".xlsm", ".xls", ".ods", ".numbers"})
CHUNK_ROWS = 8192
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_LISTED = 10


@dataclass(frozen=True)
class Column:
    """A declared column: its header name and type. ``bool`` accepts 0/1, true/false, yes/no
    (any case); all three arrive at the model as float32."""

    name: str
    dtype: ColumnType = "float"


@dataclass(frozen=True)
class TableLimits:
    max_bytes: int
    max_rows: int
    max_columns: int
    max_cell_chars: int

    @classmethod
    def of(cls, settings: Settings) -> TableLimits:
        return cls(
            settings.max_table_bytes,
            settings.max_table_rows,
            settings.max_table_columns,
            settings.max_table_cell_chars,
        )


def table_format(upload: Upload) -> str:
    """The delimiter of a table upload, by its extension; 415 for anything but CSV and TSV."""
    suffix = PurePosixPath(upload.file_name).suffix.lower()
    if suffix in DELIMITERS:
        return DELIMITERS[suffix]
    kind = "a spreadsheet" if suffix in SPREADSHEETS else f"a {suffix or 'extensionless'} file"
    raise UnsupportedTableFormat(
        f"the table {upload.file_name!r} is {kind}; tables are read as UTF-8 CSV (.csv) or TSV "
        "(.tsv): export the sheet as CSV",
        details={"file_name": upload.file_name},
    )


def check_table_size(upload: Upload, limits: TableLimits) -> None:
    if upload.size > limits.max_bytes:
        raise TableTooLarge(
            f"the table {upload.file_name!r} has {upload.size:,} bytes; the limit is "
            f"{limits.max_bytes:,} (MAX_TABLE_BYTES)",
            details={"file_name": upload.file_name, "bytes": upload.size},
        )


class TableReader:
    """One table upload, opened: its header checked against the declared columns.

    Use as a context manager; :meth:`chunks` yields ``(rows, len(columns))`` float32 arrays in
    the declared column order, whatever the file's order.
    """

    def __init__(self, upload: Upload, columns: Sequence[Column], limits: TableLimits) -> None:
        self.upload = upload
        self.columns = tuple(columns)
        self.limits = limits
        delimiter = table_format(upload)
        check_table_size(upload, limits)
        self._binary: IO[bytes] = upload.path.open("rb")
        self._rows: Rows
        if _has_quotes(self._binary):
            self._rows = QuotedRows(self._binary, delimiter)
        else:
            self._rows = PlainRows(self._binary, delimiter)
        self.rows = 0
        """Data rows read so far."""
        try:
            self.header = self._header()
            self._order = self._positions()
            self._in_order = self._order == list(range(len(self.header)))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._binary.close()

    @property
    def file_name(self) -> str:
        return self.upload.file_name

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[NDArray[np.float32]]:
        """Chunks of at most ``rows`` rows; InvalidTable if the table has no data row."""
        while (chunk := self.read(rows)) is not None:
            yield chunk
        if self.rows == 0:
            raise no_rows(self.file_name)

    def read(self, rows: int) -> NDArray[np.float32] | None:
        """The next chunk of at most ``rows`` rows, or None at the end."""
        width = len(self.header)
        cells: list[list[str]] = []
        lines: list[int] = []
        for row in self._next_rows(rows):
            if row == [] or row == [""]:
                continue  # a blank line, as spreadsheets write at the end
            if len(row) != width:
                raise InvalidTable(
                    f"the table {self.file_name!r}: line {self._rows.line_num} has {len(row)} "
                    f"cells where the header has {width}",
                    details={"file_name": self.file_name, "line": self._rows.line_num},
                )
            cells.append(row if self._in_order else [row[i] for i in self._order])
            lines.append(self._rows.line_num)
        if not cells:
            return None
        self.rows += len(cells)
        if self.rows > self.limits.max_rows:
            raise TableTooLarge(
                f"the table {self.file_name!r} has more than {self.limits.max_rows:,} data rows "
                "(MAX_TABLE_ROWS)",
                details={"file_name": self.file_name, "limit": self.limits.max_rows},
            )
        return self._values(cells, lines)

    def _next_rows(self, count: int) -> Iterator[list[str]]:
        limit = self.limits.max_cell_chars
        for _ in range(count):
            try:
                row = next(self._rows)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise self._encoding_error(exc) from None
            except csv.Error as exc:
                raise self._csv_error(exc) from None
            if row and self._rows.longest > limit and max(map(len, row)) > limit:
                column = next(i for i, cell in enumerate(row) if len(cell) > limit)
                raise TableTooLarge(
                    f"the table {self.file_name!r}: line {self._rows.line_num}, column "
                    f"{self._name(column)!r} has more than {limit:,} characters "
                    "(MAX_TABLE_CELL_CHARS)",
                    details={"file_name": self.file_name, "line": self._rows.line_num},
                )
            yield row

    def _header(self) -> list[str]:
        header = next(self._next_rows(1), None)
        if header is None or not any(cell.strip() for cell in header):
            raise InvalidTable(
                f"the table {self.file_name!r} has no header line; the first line must name "
                "the columns",
                details={"file_name": self.file_name},
            )
        if len(header) > self.limits.max_columns:
            raise TableTooLarge(
                f"the table {self.file_name!r} has {len(header):,} columns; the limit is "
                f"{self.limits.max_columns:,} (MAX_TABLE_COLUMNS)",
                details={"file_name": self.file_name, "columns": len(header)},
            )
        return [cell.strip() for cell in header]

    def _positions(self) -> list[int]:
        declared = [column.name for column in self.columns]
        seen: dict[str, int] = {}
        repeated = []
        for position, name in enumerate(self.header):
            if name in seen:
                repeated.append(name)
            seen.setdefault(name, position)
        missing = [name for name in declared if name not in seen]
        extra = [name for name in self.header if name not in set(declared)]
        if repeated or missing or extra:
            problems = []
            if missing:
                problems.append(f"lacks the column(s) {_quote(missing)}")
            if extra:
                problems.append(f"has column(s) the model does not take: {_quote(extra)}")
            if repeated:
                problems.append(f"repeats {_quote(repeated)}")
            raise TableColumnMismatch(
                f"the table {self.file_name!r} " + "; ".join(problems) + f" (the model takes "
                f"{_quote(declared)})",
                details={
                    "file_name": self.file_name,
                    "missing_columns": missing,
                    "extra_columns": extra,
                    "repeated_columns": repeated,
                    "columns": declared,
                },
            )
        return [seen[name] for name in declared]

    def _values(self, cells: list[list[str]], lines: list[int]) -> NDArray[np.float32]:
        """The chunk as float32; the first bad cell named if there is one."""
        types = {column.dtype for column in self.columns}
        if types == {"float"}:
            try:
                values = np.array(cells, dtype=np.float32)
            except ValueError:
                values = self._slowly(cells, lines)
        else:
            values = self._slowly(cells, lines)
        if not np.isfinite(values).all():
            row, column = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
            raise self._bad_cell(lines[row], column, cells[row][column], "a finite number")
        return values

    def _slowly(self, cells: list[list[str]], lines: list[int]) -> NDArray[np.float32]:
        """Cell by cell, for the types beside float and to find the cell that fails."""
        values = np.empty((len(cells), len(self.columns)), dtype=np.float32)
        for r, row in enumerate(cells):
            for c, column in enumerate(self.columns):
                values[r, c] = self._cell(row[c], column, lines[r], c)
        return values

    def _cell(self, text: str, column: Column, line: int, index: int) -> float:
        value = text.strip()
        if column.dtype == "bool":
            lowered = value.lower()
            if lowered in _TRUE:
                return 1.0
            if lowered in _FALSE:
                return 0.0
            raise self._bad_cell(line, index, text, "0/1, true/false or yes/no")
        try:
            number = float(value)
        except ValueError:
            wanted = "an integer" if column.dtype == "int" else "a number"
            raise self._bad_cell(line, index, text, wanted) from None
        if column.dtype == "int" and not number.is_integer():
            raise self._bad_cell(line, index, text, "an integer")
        return number

    def _bad_cell(self, line: int, index: int, text: str, wanted: str) -> TableValueError:
        column = self.columns[index]
        shown = repr(text[:40]) if text.strip() else "an empty cell"
        return TableValueError(
            f"the table {self.file_name!r}: line {line}, column {column.name!r} holds {shown} "
            f"where the model takes {wanted} ({column.dtype})",
            details={"file_name": self.file_name, "line": line, "column": column.name},
        )

    def _name(self, position: int) -> str:
        header = getattr(self, "header", None)
        if header is not None and position < len(header):
            return str(header[position])
        return f"#{position + 1}"

    def _encoding_error(self, exc: UnicodeDecodeError) -> InvalidTable:
        line = getattr(self._rows, "bad_line", None) or self._rows.line_num + 1
        return InvalidTable(
            f"the table {self.file_name!r} is not UTF-8 text (a byte 0x{exc.object[exc.start]:02x}"
            f" on or near line {line}); export it as UTF-8 CSV",
            details={"file_name": self.file_name, "line": line},
        )

    def _csv_error(self, exc: csv.Error) -> InvalidTable:
        line = self._rows.line_num
        return InvalidTable(
            f"the table {self.file_name!r}: line {line} is not valid CSV ({exc})",
            details={"file_name": self.file_name, "line": line},
        )


class Rows(Protocol):
    """What both row sources give: the rows, the file line the last one ended on, and a bound
    on its longest cell (cheaper than measuring every cell)."""

    @property
    def line_num(self) -> int: ...

    @property
    def longest(self) -> int: ...

    def __next__(self) -> list[str]: ...


class QuotedRows:
    """The rows of a table with quote characters, through the :mod:`csv` module."""

    longest = sys.maxsize
    """Unknown without measuring: every row's cells are measured."""

    def __init__(self, binary: IO[bytes], delimiter: str) -> None:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(text, delimiter=delimiter, strict=True)

    @property
    def line_num(self) -> int:
        return self._reader.line_num

    def __next__(self) -> list[str]:
        return next(self._reader)


class PlainRows:
    """The rows of a table that holds no quote character, split at the delimiter.

    Without quotes a CSV line is its cells joined by the delimiter, so :meth:`str.split` reads it
    exactly as the :mod:`csv` state machine would, at a third of its cost: a million rows are
    parsed in about a second instead of three. Lines are read a megabyte at a time.
    """

    def __init__(self, binary: IO[bytes], delimiter: str) -> None:
        self._binary = binary
        self._delimiter = delimiter
        self._lines: list[str] = []
        self._next = 0
        self._first = True
        self.line_num = 0
        self.longest = 0
        """The last line's length: no cell of it is longer."""
        self.bad_line: int | None = None
        """The line of an undecodable byte, when a UnicodeDecodeError was raised."""

    def __next__(self) -> list[str]:
        if self._next == len(self._lines) and not self._fill():
            raise StopIteration
        line = self._lines[self._next]
        self._next += 1
        self.line_num += 1
        self.longest = len(line)
        return line.removesuffix("\r").split(self._delimiter)

    def _fill(self) -> bool:
        block = b"".join(self._binary.readlines(1 << 20))
        if not block:
            return False
        try:
            text = block.decode("utf-8-sig" if self._first else "utf-8")
        except UnicodeDecodeError as exc:
            self.bad_line = self.line_num + block.count(b"\n", 0, exc.start) + 1
            raise
        self._first = False
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        self._lines, self._next = lines, 0
        return True


def _has_quotes(binary: IO[bytes]) -> bool:
    """Whether the file holds a double quote anywhere: one pass in blocks (a memory map would
    count the whole file in the gateway's resident memory), then back to the start."""
    try:
        while block := binary.read(1 << 20):
            if b'"' in block:
                return True
        return False
    finally:
        binary.seek(0)


def no_rows(file_name: str) -> InvalidTable:
    return InvalidTable(
        f"the table {file_name!r} has a header but no data rows",
        details={"file_name": file_name},
    )


def read_table(
    upload: Upload, columns: Sequence[Column], limits: TableLimits
) -> NDArray[np.float32]:
    """A small table whole (a hybrid image's rows): ``(rows, len(columns))`` float32."""
    with TableReader(upload, columns, limits) as reader:
        chunks = list(reader.chunks())
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _quote(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")
