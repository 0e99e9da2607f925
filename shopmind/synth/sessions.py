"""Session bookkeeping and event assembly (ordering + timestamps) for one chunk.

Simulators describe a session's events by *position* (a float that orders them within
the session); :func:`assemble` sorts them and turns positions into timestamps by adding
type-specific think times to the session start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from shopmind.synth.util import US_PER_DAY, US_PER_HOUR, US_PER_SECOND

EVENT_TYPES: tuple[str, ...] = (
    "view", "search", "click", "add_to_cart", "remove_from_cart", "purchase", "rating", "ad_impression", "ad_click",
)
VIEW, SEARCH, CLICK, CART, REMOVE, PURCHASE, RATING, AD_IMPRESSION, AD_CLICK = range(len(EVENT_TYPES))
# Mean seconds between the previous event and an event of this type.
THINK_SECONDS = np.array([40.0, 4.0, 6.0, 15.0, 30.0, 100.0, 0.0, 2.0, 5.0])

FRAUD_PATTERNS: tuple[str, ...] = ("account_takeover", "card_testing", "promotion_abuse", "reshipping")

# Relative intensity of session starts by local (CET) hour; evening peak, quiet nights.
# Weekdays: commute and lunch bumps, quiet working hours, a strong evening peak.
_HOUR_WEEKDAY = np.array([0.25, 0.12, 0.07, 0.05, 0.05, 0.08, 0.25, 0.5, 0.65, 0.7, 0.75, 0.8,
                          0.95, 0.85, 0.75, 0.75, 0.85, 1.0, 1.2, 1.45, 1.6, 1.5, 1.1, 0.6])
# Weekends: later mornings and a busy daytime, a flatter evening.
_HOUR_WEEKEND = np.array([0.35, 0.2, 0.1, 0.06, 0.05, 0.06, 0.12, 0.3, 0.6, 0.95, 1.2, 1.3,
                          1.3, 1.25, 1.25, 1.2, 1.2, 1.2, 1.25, 1.35, 1.4, 1.3, 1.0, 0.6])
_DAY_FACTOR = np.array([1.0, 0.97, 0.95, 0.95, 0.9, 0.85, 1.15])  # Mon..Sun; Sunday is peak
LOCAL_OFFSET_US = US_PER_HOUR  # home market is CET (UTC+1)
_INTENSITY = _DAY_FACTOR[:, None] * np.stack([_HOUR_WEEKDAY] * 5 + [_HOUR_WEEKEND] * 2)
_INTENSITY = _INTENSITY / _INTENSITY.max()  # (weekday, hour) acceptance probability
ACCEPT_RATE = float(_INTENSITY.mean())


def seasonal_times(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, expected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Session start times in [lo, hi) per owner, shaped by hour-of-day and weekday.

    Draws uniform candidates and keeps each with the (weekday, hour) intensity (thinning),
    so the expected number kept per owner is ``expected``. Returns (owner index, time).
    """
    n_cand = rng.poisson(np.maximum(expected, 0) / ACCEPT_RATE)
    owner = np.repeat(np.arange(len(lo)), n_cand)
    span = np.maximum(hi - lo, 0)[owner]
    t = lo[owner] + (rng.random(len(owner)) * span).astype(np.int64)
    local = t + LOCAL_OFFSET_US
    weekday = ((local // US_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday (index 3)
    hour = (local // US_PER_HOUR) % 24
    keep = rng.random(len(t)) < _INTENSITY[weekday, hour]
    return owner[keep], t[keep]


@dataclass(frozen=True)
class Window:
    """The simulated period in epoch microseconds."""

    start: int
    end: int

    @property
    def mid(self) -> int:
        """Taste drift starts here."""
        return (self.start + self.end) // 2

    @property
    def stop(self) -> int:
        """Latest session start, so sessions finish inside the window."""
        return self.end - US_PER_HOUR


@dataclass
class SessionTable:
    """All sessions of a chunk. Columns grow by :meth:`add`; ids are row numbers."""

    cols: dict[str, list[np.ndarray]] = field(default_factory=dict)
    n: int = 0
    _frozen: dict[str, np.ndarray] | None = None

    DEFAULTS: ClassVar[dict[str, int | float]] = {
        "user": -1,  # row into the chunk's users, -1 for anonymous visitors
        "start": 0,  # epoch microseconds
        "device": 0,  # index into vocab.DEVICES
        "country": 0,  # index into ALL_COUNTRIES (the visitor's IP country)
        "fraud": -1,  # index into FRAUD_PATTERNS for fraudulent orders
        "ship_country": -1,  # -1: the user's home country
        "device_id": -1,  # order device token: -1 user's own, else row into extra tokens
        "instrument": -1,  # payment instrument: -1 user's own, else row into extra tokens
        "discount": 0.0,  # share knocked off the order amount (first-order promotions)
    }

    def add(self, n: int, **values: np.ndarray | int | float) -> np.ndarray:
        """Append ``n`` sessions; unspecified columns take their defaults. Returns their ids."""
        for name, default in self.DEFAULTS.items():
            v = values.get(name, default)
            dtype = np.float64 if isinstance(default, float) else np.int64
            self.cols.setdefault(name, []).append(np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy())
        ids = np.arange(self.n, self.n + n)
        self.n += n
        self._frozen = None
        return ids

    def __getitem__(self, name: str) -> np.ndarray:
        if self._frozen is None:
            self._frozen = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.cols.items()}
        return self._frozen[name]


class EventParts:
    """Collects event rows (column arrays) before they are sorted and timed."""

    COLUMNS = {
        "session": (np.int64, -1),
        "pos": (np.float64, 0.0),
        "type": (np.int64, 0),
        "item": (np.int64, -1),
        "query": (np.int64, -1),  # row into Catalog.queries
        "price": (np.float64, np.nan),
        "quantity": (np.int64, -1),
        "rating": (np.float64, np.nan),
        "ad": (np.int64, -1),
        "converted": (np.int64, -1),  # -1 null, 0 false, 1 true
    }

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in self.COLUMNS}

    def add(self, session: np.ndarray, pos: np.ndarray | float, type_: int, **values: np.ndarray | float | int) -> None:
        """Append events of one type; unspecified columns take their defaults (null)."""
        values = {**values, "session": session, "pos": pos, "type": type_}
        for name, (dtype, default) in self.COLUMNS.items():
            v = values.get(name, default)
            self.parts[name].append(np.broadcast_to(np.asarray(v, dtype=dtype), (len(session),)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0, dtype=self.COLUMNS[k][0]) for k, v in self.parts.items()}


def assemble(rng: np.random.Generator, parts: EventParts, sessions: SessionTable) -> dict[str, np.ndarray]:
    """Order events within sessions and give them timestamps.

    Each event happens a type-specific exponential think time after the previous one;
    items bought together share one timestamp (they are one order).
    """
    ev = parts.arrays()
    order = np.lexsort((ev["pos"], ev["session"]))
    ev = {k: v[order] for k, v in ev.items()}
    n = len(order)
    if n == 0:
        ev["ts"] = np.zeros(0, dtype=np.int64)
        return ev
    gap = rng.exponential(1.0, n) * THINK_SECONDS[ev["type"]] * US_PER_SECOND
    new_session = np.ones(n, dtype=bool)
    new_session[1:] = ev["session"][1:] != ev["session"][:-1]
    same_basket = ~new_session & (ev["type"] == PURCHASE)
    same_basket[1:] &= ev["type"][:-1] == PURCHASE
    gap[new_session | same_basket] = 0.0
    gap = gap.astype(np.int64)
    csum = np.cumsum(gap)
    starts = np.flatnonzero(new_session)
    run = np.diff(np.append(starts, n))
    ev["ts"] = sessions["start"][ev["session"]] + csum - np.repeat(csum[starts], run)
    return ev


def concat_events(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate assembled event batches column-wise."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
