"""Reading shop exports (CSV, JSONL, Parquet) in chunks for `shopmind import`.

Every value reaches the same Pydantic validation as the HTTP API, so a file and a request are held to
one contract. CSV is read as text and coerced by the schema (no guessing of types by the reader).
Every format is read a chunk at a time, so the reader holds one chunk, not the file (docs/benchmarks.md,
"CSV import"), and every problem is named by where it is: a line of a CSV or JSONL file, a row of a
Parquet file (both counted from 1).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.parquet as pq

from shopmind.exceptions import InvalidInputError

MAX_CSV_FIELD = 64 << 20  # characters of one CSV field: a request body's limit (api/fast_routes.py)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInputError(f"{path.name}: unknown file type {path.suffix!r}; use .csv, .jsonl or .parquet", field="path")
    return fmt


def _parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InvalidInputError(f"{path.name}: not a readable Parquet file", field="path") from exc


def _parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """`_drop_nulls`, and the nulls inside struct columns too, in one pass. A Parquet struct column holds
    every key that any row has: each row reads back with all of them, None where it had none, so an item
    with two attributes in a catalog of 600 attribute names came back with 600 (and was refused by the
    attributes' bound; found by a review). A struct cannot tell a key absent from one set to null: both
    are left out."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: clean(v) if isinstance(v, (dict, list)) else v for k, v in row.items() if v is not None and v != ""}


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    # An empty cell means "not given": let the schema's default apply instead of validating a null.
    return {k: v for k, v in row.items() if v is not None and v != ""}


def where_rows_are(path: Path) -> str:
    """What a file's row numbers count: lines of a text file, rows of a Parquet file (both from 1)."""
    return "row" if file_format(path) == "parquet" else "line"


def iter_rows(path: Path, chunk: int = 10_000,
              kind: str | None = None) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
    """Yield (numbers, rows): lists of at most `chunk` row dicts, each with where it starts in the file
    (its line in CSV and JSONL, its row in Parquet, from 1), so that an error names what an editor shows.
    With `kind`, a CSV whose first line names none of that kind's fields is refused as having no
    header, without quoting that line: it is a data row, whose values (ids, e-mails, addresses) the
    unknown-field errors used to repeat."""
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file", field="path")
    fmt = file_format(path)
    if fmt == "parquet":
        batches = _parquet(path).iter_batches(batch_size=chunk)
        done = 0
        while True:
            try:  # a damaged data page surfaces while its batch is read, after the footer opened fine
                batch = next(batches, None)
            except (OSError, ValueError) as exc:  # pyarrow's ArrowException types derive from these
                raise InvalidInputError(f"{path.name}: not a readable Parquet file ({exc.__class__.__name__})",
                                        field="path") from None
            if batch is None:
                break
            rows = [_parquet_row(r) for r in batch.to_pylist()]
            yield list(range(done + 1, done + len(rows) + 1)), rows
            done += len(rows)
    elif fmt == "csv":
        yield from _csv_chunks(path, chunk, kind)
    else:
        yield from _jsonl_chunks(path, chunk)


def _utf8_lines(path: Path, fh: BinaryIO) -> Iterator[str]:
    """The file's lines as text, each decoded alone so that bytes that are not UTF-8 are named by line."""
    for number, raw in enumerate(fh, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path.name}: line {number} is not valid UTF-8 (byte {exc.start + 1} of the "
                                    f"line); {file_format(path).upper()} files must be UTF-8", field="line") from None
        yield line.removeprefix("\ufeff") if number == 1 else line  # the byte-order mark spreadsheets write


def _jsonl_chunks(path: Path, chunk: int) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
    numbers: list[int] = []
    rows: list[Any] = []
    with open(path, "rb") as fh:
        for number, line in enumerate(_utf8_lines(path, fh), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path.name}: line {number} is not valid JSON ({exc.msg})", field="line") from None
            except (ValueError, RecursionError) as exc:  # a number of thousands of digits; deep nesting
                raise InvalidInputError(f"{path.name}: line {number} is not valid JSON ({json_problem(exc)})",
                                        field="line") from None
            numbers.append(number)
            rows.append(_drop_nulls(row) if isinstance(row, dict) else row)
            if len(rows) == chunk:
                yield numbers, rows
                numbers, rows = [], []
    if rows:
        yield numbers, rows


def _csv_chunks(path: Path, chunk: int, kind: str | None) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
    """CSV read a record at a time by the standard library's parser (quoted fields may span lines): every
    value stays text for the schema to coerce, and a malformed record is named by its line, never quoted."""
    numbers: list[int] = []
    rows: list[dict[str, Any]] = []
    # a field may hold up to a request body's worth (the module's default, 128 KiB, refused JSON-escaped
    # attributes that a JSONL file carries; found by a review); validation bounds each field's size
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    with open(path, "rb") as fh:
        reader = csv.reader(_utf8_lines(path, fh), strict=True)
        header: list[str] | None = None
        unnamed = False  # the header has unnamed columns (a spreadsheet's ",,")
        end = 0  # the line the previous record ended on
        while True:
            start = end + 1
            try:
                record = next(reader, None)
            except csv.Error as exc:  # the parser's messages name the problem, not the values
                raise InvalidInputError(f"{path.name}: line {start} is not well-formed CSV ({exc})", field="line") from None
            end = reader.line_num
            if record is None:
                break
            if not record:  # a blank line
                continue
            if header is None:
                header = _csv_header(path, record, kind)
                unnamed = "" in header
                continue
            if len(record) > len(header):
                raise InvalidInputError(f"{path.name}: line {start} has {len(record)} fields where the header has "
                                        f"{len(header)}", field="line")
            # a shorter record leaves its last fields empty, as spreadsheets write rows whose last cells
            # are empty (a required field left out is named by validation); unnamed columns (a header
            # ending in ",,") count only when they hold a value, which validation refuses as unknown
            row = {name: value for name, value in zip(header, record) if name}
            if unnamed:
                value = next((value for name, value in zip(header, record) if not name and value), None)
                if value is not None:
                    row[""] = value
            numbers.append(start)
            rows.append(_drop_nulls(row))
            if len(rows) == chunk:
                yield numbers, rows
                numbers, rows = [], []
    if rows:
        yield numbers, rows


def _csv_header(path: Path, names: list[str], kind: str | None) -> list[str]:
    if kind is not None:
        from shopmind.events.schemas import ROW_MODELS

        fields = set(ROW_MODELS[kind].model_fields) if kind in ROW_MODELS else set()
        if fields and not fields & set(names):
            raise InvalidInputError(f"{path.name}: the first line names none of the fields of {kind} "
                                    f"({', '.join(sorted(fields))}): a CSV file starts with a header line",
                                    field="header")
    twice = sorted({n for n in names if n and names.count(n) > 1})  # unnamed columns: see _csv_chunks
    if twice:  # which of the two columns would be meant cannot be known
        raise InvalidInputError(f"{path.name}: the header names {', '.join(map(repr, twice))} more than once",
                                field="header")
    return names


def json_problem(exc: ValueError | RecursionError) -> str:
    """What stopped Python's JSON parser on a text that is well-formed as far as a syntax error goes: nesting
    past the recursion limit, an integer past the 4,300-digit limit for conversions, bytes not UTF-8."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start} cannot be decoded)"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0]


def count_rows(path: Path) -> int | None:
    """Row count for a progress bar, when cheap to know."""
    fmt = file_format(path)
    if fmt == "parquet":
        return _parquet(path).metadata.num_rows
    with open(path, "rb") as fh:
        lines = sum(1 for _ in fh)
    return max(lines - 1, 0) if fmt == "csv" else lines
