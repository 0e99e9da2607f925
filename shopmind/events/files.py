"""Reading shop exports (CSV, JSONL, Parquet) in chunks for `shopmind import`.

Every value reaches the same Pydantic validation as the HTTP API, so a file and a request are held to
one contract. CSV is read as text and coerced by the schema (no guessing of types by the reader).
Parquet and JSONL are read a chunk at a time; a CSV file is parsed whole, then validated and written in
chunks, so its peak memory grows with the file (about 100 MB more per 40 MB of CSV, measured by a review):
split very large CSV exports, or convert them to Parquet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from shopmind.exceptions import InvalidInputError

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


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    # An empty cell means "not given": let the schema's default apply instead of validating a null.
    return {k: v for k, v in row.items() if v is not None and v != ""}


def iter_rows(path: Path, chunk: int = 10_000, kind: str | None = None) -> Iterator[list[dict[str, Any]]]:
    """Yield lists of row dicts of at most `chunk` rows. With `kind`, a CSV whose first line names none
    of that kind's fields is refused as having no header, without quoting that line: it is a data row,
    whose values (ids, e-mails, addresses) the unknown-field errors used to repeat."""
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file", field="path")
    fmt = file_format(path)
    if fmt == "parquet":
        batches = _parquet(path).iter_batches(batch_size=chunk)
        while True:
            try:  # a damaged data page surfaces while its batch is read, after the footer opened fine
                batch = next(batches, None)
            except (OSError, ValueError) as exc:  # pyarrow's ArrowException types derive from these
                raise InvalidInputError(f"{path.name}: not a readable Parquet file ({exc.__class__.__name__})",
                                        field="path") from None
            if batch is None:
                break
            yield [_drop_nulls(r) for r in batch.to_pylist()]
    elif fmt == "csv":
        if path.stat().st_size == 0:  # no rows, as an empty JSONL file or a CSV holding its header alone
            return
        try:
            frame = pl.read_csv(path, infer_schema=False)
        except pl.exceptions.PolarsError as exc:
            line = _first_line_not_utf8(path)
            if line is not None:
                raise InvalidInputError(f"{path.name}: line {line[0]} is not valid UTF-8 (byte {line[1]} of the line); "
                                        "CSV files must be UTF-8", field="line") from None
            raise InvalidInputError(f"{path.name}: not a readable CSV file ({exc.__class__.__name__})", field="path") from exc
        if kind is not None:
            from shopmind.events.schemas import ROW_MODELS

            fields = set(ROW_MODELS[kind].model_fields) if kind in ROW_MODELS else set()
            if fields and not fields & set(frame.columns):
                raise InvalidInputError(f"{path.name}: the first line names none of the fields of {kind} "
                                        f"({', '.join(sorted(fields))}): a CSV file starts with a header line",
                                        field="header")
        for part in frame.iter_slices(chunk):
            yield [_drop_nulls(r) for r in part.to_dicts()]
    else:
        rows: list[dict[str, Any]] = []
        with open(path, "rb") as fh:  # bytes: a line that is not UTF-8 is named, like one that is not JSON
            for number, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidInputError(f"{path.name}: line {number} is not valid UTF-8 (byte {exc.start + 1} "
                                            "of the line); JSONL files must be UTF-8", field="line") from None
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{path.name}: line {number} is not valid JSON ({exc.msg})", field="line") from None
                except (ValueError, RecursionError) as exc:  # a number of thousands of digits; deep nesting
                    raise InvalidInputError(f"{path.name}: line {number} is not valid JSON ({json_problem(exc)})",
                                            field="line") from None
                if len(rows) == chunk:
                    yield [_drop_nulls(r) if isinstance(r, dict) else r for r in rows]
                    rows = []
        if rows:
            yield [_drop_nulls(r) if isinstance(r, dict) else r for r in rows]


def json_problem(exc: ValueError | RecursionError) -> str:
    """What stopped Python's JSON parser on a text that is well-formed as far as a syntax error goes: nesting
    past the recursion limit, an integer past the 4,300-digit limit for conversions, bytes not UTF-8."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start} cannot be decoded)"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0]


def _first_line_not_utf8(path: Path) -> tuple[int, int] | None:
    """(line number, byte within the line) of the first line that is not UTF-8, read only once a file
    failed to parse, to name where."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, exc.start + 1
    return None


def count_rows(path: Path) -> int | None:
    """Row count for a progress bar, when cheap to know."""
    fmt = file_format(path)
    if fmt == "parquet":
        return _parquet(path).metadata.num_rows
    with open(path, "rb") as fh:
        lines = sum(1 for _ in fh)
    return max(lines - 1, 0) if fmt == "csv" else lines
