"""Writing a synthetic shop to disk as CSV, JSON Lines or Parquet.

:func:`write_shop` writes an in-memory :class:`SyntheticShop`. :func:`stream_shop`
generates and writes the same data chunk by chunk, for shops too large for memory
(1M users ~ 75M events): events are spilled into time buckets and each bucket is then
sorted on its own, so memory stays bounded by one chunk plus one bucket.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from shopmind.synth.generator import (
    ShopConfig, SyntheticShop, build_context, finish_events, finish_orders, iter_chunks, resolve_config,
    split_by_time, time_buckets,
)

FORMATS = ("csv", "jsonl", "parquet")
TABLES = ("items", "users", "events", "orders", "payments")
# Ground-truth labels a shop would not send with its events: kept out of events.<fmt>, written to
# ad_labels.parquet beside truth.parquet for the ads benchmarks.
LABEL_COLUMNS = {"events": ["converted"]}


def _public(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop(LABEL_COLUMNS.get(name, []), strict=False)


def _ad_labels(events: pl.DataFrame) -> pl.DataFrame:
    return events.filter(pl.col("converted").is_not_null()).select("event_id", "converted")


def write_shop(shop: SyntheticShop, directory: Path, fmt: str = "parquet") -> dict[str, Path]:
    """Write the five public tables as ``<name>.<fmt>`` and ``truth.parquet``.

    In CSV and JSONL, list/struct columns become JSON strings (the ``attributes`` and
    order ``items`` columns already are JSON strings). Returns table name -> path.
    """
    directory = _prepare(directory, fmt)
    paths: dict[str, Path] = {}
    for name in TABLES:
        paths[name] = directory / f"{name}.{fmt}"
        with _TableWriter(paths[name], fmt) as out:
            out.write(_public(name, getattr(shop, name)))
    paths["truth"] = directory / "truth.parquet"
    shop.truth.write_parquet(paths["truth"])  # ground truth keeps its list column
    paths["ad_labels"] = directory / "ad_labels.parquet"
    _ad_labels(shop.events).write_parquet(paths["ad_labels"])
    return paths


def stream_shop(
    directory: Path, config: ShopConfig | None = None, fmt: str = "parquet", **overrides: Any
) -> dict[str, Path]:
    """Generate a shop straight to disk with bounded memory; same rows as ``write_shop``.

    ``write_shop(generate_shop(cfg), d, fmt)`` and ``stream_shop(d, cfg, fmt)`` produce
    the same tables (Parquet files may differ in row-group layout).
    """
    cfg = resolve_config(config, **overrides)
    directory = _prepare(directory, fmt)
    ctx = build_context(cfg)
    paths = {name: directory / f"{name}.{fmt}" for name in TABLES}
    paths["truth"] = directory / "truth.parquet"
    paths["ad_labels"] = directory / "ad_labels.parquet"
    with _TableWriter(paths["items"], fmt) as out:
        out.write(ctx.catalog.items)

    bucket_us, n_buckets = time_buckets(cfg)
    orders, payments = [], []
    spill = Path(tempfile.mkdtemp(prefix="shopmind-synth-", dir=directory))
    try:
        spill_files = [spill / f"events-{b:03d}.parquet" for b in range(n_buckets)]
        with (
            _TableWriter(paths["users"], fmt) as users_out,
            _TableWriter(paths["truth"], "parquet") as truth_out,
            _Spill(spill_files) as spilled,
        ):
            for chunk in iter_chunks(ctx):
                empty = chunk.events.clear()
                users_out.write(chunk.users)
                truth_out.write(chunk.truth)
                spilled.write(split_by_time(chunk.events, ctx.win.start, bucket_us, n_buckets))
                orders.append(chunk.orders)
                payments.append(chunk.payments)
        _write_events(spill_files, paths["events"], paths["ad_labels"], fmt, empty)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    final_orders, final_payments = finish_orders(pl.concat(orders), pl.concat(payments))
    for name, frame in (("orders", final_orders), ("payments", final_payments)):
        with _TableWriter(paths[name], fmt) as out:
            out.write(frame)
    return paths


def _prepare(directory: Path, fmt: str) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_events(spill_files: list[Path], path: Path, labels: Path, fmt: str, empty: pl.DataFrame) -> None:
    """Sort each time bucket (buckets are disjoint in time) and append with running ids."""
    next_id = 1
    with _TableWriter(path, fmt) as out, _TableWriter(labels, "parquet") as labels_out:
        first = finish_events(empty)  # fixes the schema/header even without events
        out.write(_public("events", first))
        labels_out.write(_ad_labels(first))
        for spill_file in spill_files:
            if spill_file.exists():
                events = finish_events(pl.read_parquet(spill_file), first_id=next_id)
                out.write(_public("events", events))
                labels_out.write(_ad_labels(events))
                next_id += events.height


class _Spill:
    """One Parquet spill file per time bucket; chunks append row groups in chunk order."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.writers: dict[int, _TableWriter] = {}

    def __enter__(self) -> _Spill:
        return self

    def write(self, parts: dict[int, pl.DataFrame]) -> None:
        for b, part in parts.items():
            if b not in self.writers:
                self.writers[b] = _TableWriter(self.paths[b], "parquet", compression="lz4")
            self.writers[b].write(part)

    def __exit__(self, *exc: object) -> None:
        for writer in self.writers.values():
            writer.close()


class _TableWriter:
    """Appends frames to one CSV, JSONL or Parquet file."""

    def __init__(self, path: Path, fmt: str, compression: str = "zstd") -> None:
        self.path, self.fmt, self.compression = path, fmt, compression
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._file: BinaryIO | None = None
        self._header = True

    def __enter__(self) -> _TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "parquet":
            table = frame.to_arrow()
            if self._parquet is None:
                self._schema = table.schema
                self._parquet = pq.ParquetWriter(self.path, table.schema, compression=self.compression)
            self._parquet.write_table(table if table.schema == self._schema else table.cast(self._schema))
            return
        if self._file is None:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        frame = _nested_to_json(frame)
        if self.fmt == "csv":
            frame.write_csv(self._file, include_header=self._header)
            self._header = False
        else:
            frame.write_ndjson(self._file)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self.fmt != "parquet" and not self.path.exists():
            self.path.touch()


def _nested_to_json(frame: pl.DataFrame) -> pl.DataFrame:
    """Encode list/struct/array columns as JSON strings (flat formats cannot hold them)."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    # json_encode works on structs: wrap the value as {"v": value} and cut the wrapper off.
    return frame.with_columns(
        pl.struct(pl.col(name).alias("v")).struct.json_encode().str.slice(len('{"v":')).str.head(-1).alias(name)
        for name in nested
    )
