"""What a file says, for tests that search files for identifiers that must not be there.

A plain byte search misses most strings in a compressed file: polars writes parquet with zstd, where
only a few of 200 random 32-character ids survive verbatim. So parquet files are searched in their
decoded values too, zip archives (torch checkpoints, .npz) in their members, gzip in its content.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import polars as pl


def searchable(path: Path) -> bytes:
    """The file's bytes followed by its decoded content, where it has one."""
    raw = Path(path).read_bytes()
    parts = [raw]
    if raw[:4] == b"PAR1":
        table = pl.read_parquet(io.BytesIO(raw))
        parts.append("\n".join(table.columns).encode())
        for column in table.columns:
            values = table[column]
            if values.dtype == pl.Utf8:
                parts.append("\n".join(v for v in values.to_list() if v is not None).encode())
            elif not (values.dtype.is_numeric() or values.dtype.is_temporal() or values.dtype == pl.Boolean):
                parts.append("\n".join(str(v) for v in values.to_list()).encode())  # lists, structs
    elif raw[:2] == b"\x1f\x8b":
        parts.append(gzip.decompress(raw))
    elif zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            parts.extend(archive.read(name) for name in archive.namelist())
    return b"\n".join(parts)
