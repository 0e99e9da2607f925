"""Small vectorised helpers shared by the synthetic-shop modules."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def ids(prefix: str, numbers: np.ndarray, width: int) -> pl.Series:
    """Zero-padded string ids like ``i000042`` without a Python loop."""
    digits = pl.Series(np.asarray(numbers, dtype=np.int64)).cast(pl.Utf8).str.zfill(width)
    return pl.select(pl.concat_str([pl.lit(prefix), pl.lit(digits)])).to_series()


def hex_tokens(rng: np.random.Generator, shape: int | tuple[int, ...], width: int = 12) -> np.ndarray:
    """Random lowercase hex strings as a numpy bytes array (``S{width}``) of ``shape``."""
    shape = (shape,) if isinstance(shape, int) else shape
    nibbles = rng.integers(0, 16, size=(*shape, width), dtype=np.uint8)
    return np.ascontiguousarray(_HEX[nibbles]).view(f"S{width}").reshape(shape)


def to_utf8(values: np.ndarray, prefix: str = "") -> pl.Series:
    """numpy bytes array -> polars Utf8 series, optionally prefixed; empty bytes become null."""
    s = pl.Series(values).cast(pl.Utf8)
    s = pl.select(pl.when(pl.lit(s) != "").then(pl.concat_str([pl.lit(prefix), pl.lit(s)]))).to_series()
    return s


def epoch_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch for an aware datetime."""
    if ts.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    return int(round(ts.timestamp() * US_PER_SECOND))


def to_datetime(us: np.ndarray) -> pl.Series:
    """Microsecond epoch integers -> Datetime('us', 'UTC')."""
    return pl.Series(np.asarray(us, dtype=np.int64)).cast(pl.Datetime("us", "UTC"))


def categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of ``probs`` (rows need not be normalised)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def offsets(counts: np.ndarray) -> np.ndarray:
    """Start index of each group for consecutive groups of the given sizes."""
    out = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def within_group_index(counts: np.ndarray) -> np.ndarray:
    """0..count-1 for each group, concatenated (the 'k-th element of my group')."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(offsets(counts), counts)


def scramble(values: np.ndarray, modulus: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, modulus) onto itself that looks random.

    A 4-round Feistel network on the smallest even bit width covering ``modulus``, with
    cycle-walking for results outside the range. Used for unique yet random-looking
    phone numbers and email suffixes without a global uniqueness check.
    """
    half = max(1, (int(modulus - 1).bit_length() + 1) // 2)
    mask = (1 << half) - 1
    x = np.asarray(values, dtype=np.uint64).copy()
    todo = np.ones(len(x), dtype=bool)
    while todo.any():
        v = x[todo]
        left, right = v >> np.uint64(half), v & np.uint64(mask)
        for r in range(4):
            round_key = np.uint64((key * 7919 + r * 104729) & 0xFFFFFFFF)
            f = (right * np.uint64(0x9E3779B1) + round_key) & np.uint64(0xFFFFFFFF)
            f = ((f ^ (f >> np.uint64(15))) * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
            left, right = right, left ^ ((f >> np.uint64(7)) & np.uint64(mask))
        v = (left << np.uint64(half)) | right
        x[todo] = v
        todo[todo] = v >= modulus  # walk the cycle until we land inside the range
    return x.astype(np.int64)


def first_occurrence(keys: np.ndarray) -> np.ndarray:
    """Boolean mask marking the first occurrence of each key (in array order)."""
    mask = np.zeros(len(keys), dtype=bool)
    _, first = np.unique(keys, return_index=True)
    mask[first] = True
    return mask
