"""Velocity features: count, sum, mean, max and distinct counts over sliding windows per entity.

Every payment-like event names some of five entities (user, card, device, ip, terminal; keys are
pseudonyms or fingerprints, opaque here). For each named entity and each window w in WINDOWS the
features of an event at time t are computed over that entity's events with ts in (t - w, t], the
event itself included: the window is half-open on the left, so an event exactly w old is out and one
1 ms younger is in. `<kind>_seconds_since_prev` is the gap to the entity's latest event strictly
before t (-1 when there is none within the retention).

Late and out-of-order events are inserted at their place in time: their own features count only
events with ts <= their ts, and later queries see them. Each entity keeps its events for RETAIN_MS
(30 d plus a one-day margin) behind its newest event, so an event up to a day late still sees an
exact 30-day window. Recording is idempotent: the same event_id at the same ts counts once.

Amounts are kept as integer micro-units, so sums do not depend on insertion order. `window_features`
is the definition, one pass over an entity's last 30 days. The Redis store computes the features inside
its Lua script (velocity_redis.RedisVelocityStore has the layout and costs). The in-process store runs
that pass for entities with few events and keeps incremental structures for busier ones (prefix sums,
hourly maxima, last occurrence of each distinct value; `_Series` says why there are two layouts),
because the pass costs too much for hot terminals and NAT IPs inside a 2 ms decision; the tests hold
both stores and both layouts bit-identical to each other and to a brute force.

Erasure removes the user's own series and every entry the user's events left in other entities
(those say "this user used this card"), found through a per-user index of what was written.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from operator import itemgetter
from numbers import Integral
from typing import Any, Protocol

from shopmind.exceptions import InvalidInputError
from shopmind.storage.cache import parse_cache_url

ENTITIES = ("user", "card", "device", "ip", "terminal")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WINDOWS = {"1h": HOUR_MS, "1d": DAY_MS, "7d": 7 * DAY_MS, "30d": 30 * DAY_MS}
LATE_MARGIN_MS = DAY_MS                       # late events up to this old still get exact 30-day windows
RETAIN_MS = max(WINDOWS.values()) + LATE_MARGIN_MS
DEFAULT_DISTINCT: dict[str, tuple[str, ...]] = {
    "user": ("card", "device", "ip"),
    "card": ("user", "device"),
    "device": ("user", "card"),
    "ip": ("user", "card"),
    "terminal": ("card",),
}
MICRO = 1_000_000
SEP = "\x1f"                                  # field separator in Redis members; refused inside ids
TS_LIMIT = 2 ** 46                            # |ts_ms| below this (2200 years): Redis score bands stay exact
INDEX_SMALL = 32                              # a user's erasure index is a tuple up to this many entries
NEVER = -(2 ** 62)                            # "no occurrence": below every window start, even before the epoch

_TS = itemgetter(0)                           # a small series' row -> its ts
_Entry = tuple[str, str, str, int]            # (kind, key, event_id, ts) of an entry a user left in an entity


@dataclass(frozen=True)
class Observation:
    """One event as the risk engine sees it; `entities` maps kind -> key for any subset of ENTITIES."""

    event_id: str
    ts_ms: int
    amount: float
    entities: dict[str, str] = field(default_factory=dict)


class VelocityStore(Protocol):
    name: str

    def observe(self, obs: Observation) -> dict[str, float]: ...
    def query(self, obs: Observation) -> dict[str, float]: ...
    def erase_subject(self, pseudonym: str) -> dict[str, int]: ...


@lru_cache(maxsize=64)
def _names(kind: str, distinct: tuple[str, ...]) -> tuple[str, tuple[tuple[int, str, str, str, str, tuple[str, ...]], ...]]:
    per_window = tuple(
        (w, f"{kind}_count_{n}", f"{kind}_sum_{n}", f"{kind}_mean_{n}", f"{kind}_max_{n}",
         tuple(f"{kind}_distinct_{d}_{n}" for d in distinct))
        for n, w in sorted(WINDOWS.items(), key=lambda item: item[1]))
    return f"{kind}_seconds_since_prev", per_window


def feature_names(distinct: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Every feature name a store with this distinct configuration can return (to fill absent kinds)."""
    distinct = DEFAULT_DISTINCT if distinct is None else distinct
    out = []
    for kind in ENTITIES:
        since, per_window = _names(kind, tuple(distinct.get(kind, ())))
        out.append(since)
        for _, *names, dnames in per_window:
            out.extend(names)
            out.extend(dnames)
    return out


def window_features(kind: str, distinct: tuple[str, ...], ts: list[int], amounts: list[int],
                    cols: list[list[Any]], t: int, extra: tuple[int, tuple[Any, ...]] | None = None,
                    out: dict[str, float] | None = None) -> dict[str, float]:
    """Features at time t of one entity from its events sorted by ts (amounts in micro-units, one
    column of values per distinct kind, "" or b"" meaning absent). `extra` = (amount, values) is one
    more event at t that is not in the lists (the event being observed). Written into `out` when given
    (and returned). Windows are nested, so one backward pass over the 30 days serves all four, with
    the slicing and set work done in C."""
    since, per_window = _names(kind, distinct)
    hi = bisect_right(ts, t)
    before = bisect_left(ts, t, 0, hi)
    out = {} if out is None else out
    out[since] = (t - ts[before - 1]) / 1000 if before and ts[before - 1] >= t - RETAIN_MS else -1.0
    sets: list[set[Any]] = [set() for _ in cols]
    n = total = 0
    top: int | None = None
    if extra is not None:
        n, total, top = 1, extra[0], extra[0]
        for s, v in zip(sets, extra[1]):
            s.add(v)
    upper = hi
    for w, count_name, sum_name, mean_name, max_name, dnames in per_window:
        lo = bisect_right(ts, t - w, 0, upper)
        if lo < upper:
            seg = amounts[lo:upper]
            n += upper - lo
            total += sum(seg)
            seg_top = max(seg)
            top = seg_top if top is None or seg_top > top else top
            for s, col in zip(sets, cols):
                s.update(col[lo:upper])
            upper = lo
        out[count_name] = n
        out[sum_name] = total / MICRO
        out[mean_name] = total / n / MICRO if n else 0.0
        out[max_name] = top / MICRO if top is not None else 0.0
        for s, name in zip(sets, dnames):
            out[name] = len(s) - ("" in s or b"" in s)
    return out


def _check(obs: Observation) -> int:
    """Validate once at the boundary; returns the amount in micro-units. Messages never echo ids."""
    if not isinstance(obs.ts_ms, Integral) or not -TS_LIMIT < obs.ts_ms < TS_LIMIT:
        raise InvalidInputError("ts_ms must be an integer number of milliseconds within 2^46 of the epoch", field="ts_ms")
    if not obs.event_id or SEP in obs.event_id:
        raise InvalidInputError("event_id must be non-empty and free of control separators", field="event_id")
    for kind, key in obs.entities.items():
        if kind not in DEFAULT_DISTINCT:
            raise InvalidInputError(f"unknown entity kind {kind!r}: use one of {', '.join(ENTITIES)}", field="entities")
        if not key or SEP in key:
            raise InvalidInputError(f"{kind} key must be non-empty and free of control separators", field="entities")
    try:
        return int(round(obs.amount * MICRO))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError("amount must be a finite number", field="amount") from exc


def _last_upto(occurrences: list[int], t: int) -> int:
    """The last of the sorted occurrences that is <= t, or NEVER (not -1: a window can start before it)."""
    p = bisect_right(occurrences, t)
    return occurrences[p - 1] if p else NEVER


class _Series:
    """One entity's events, sorted by ts, in one of two layouts.

    Small (up to SMALL events, as most entities are: a user's orders, a card's payments): one list of
    rows (ts, event_id, amount, user, *distinct values), features computed by `window_features`. Rows
    are tuples of strings and ints, which CPython's cycle collector stops tracking once it has seen
    them, so a small series costs the collector two containers and one reference per event. The large
    layout below costs it some twenty containers and about ten references per event, and a full
    collection holds the GIL while it walks all of them (half a second with a million containers,
    docs/benchmarks.md). Rows are inserted in place, not rebuilt: a rebuilt tuple per insert would be
    new, so young, every time, and the young collections that walk them grew fivefold when tried.

    Large (past SMALL; it stays large if it shrinks again): parallel lists plus what spares a pass over
    30 days per feature (measured at 0.4-0.7 ms median with hot terminals and NAT IPs): prefix sums of
    the integer amounts, the max per clock hour (a window's max reads at most two hours of events and
    720 hourly maxima), and per distinct kind each value's occurrence times, values ordered by last
    occurrence."""

    __slots__ = ("rows", "ts", "eid", "amt", "user", "cols", "pre", "hours", "hmax", "occ", "lts", "lvs")
    SMALL = 32

    def __init__(self) -> None:
        self.rows: list[tuple] | None = []                 # the small layout; None once large
        # The large layout, None while small (built by _grow):
        self.ts: list[int] | None = None
        self.eid: list[str] | None = None
        self.amt: list[int] | None = None
        self.user: list[str] | None = None
        self.cols: list[list[str]] | None = None
        self.pre: list[int] | None = None                  # pre[k] - pre[j] = sum(amt[j:k])
        self.hours: list[int] | None = None                # clock hours holding events, sorted
        self.hmax: list[int] | None = None                 # the largest amount of each of those hours
        self.occ: list[dict[str, list[int]]] | None = None  # per distinct kind: value -> its times
        self.lts: list[list[int]] | None = None            # last occurrence of each value, sorted
        self.lvs: list[list[str]] | None = None            # ... and the value, in the same order

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.ts)

    def entry(self, j: int) -> tuple[int, str, str]:
        """(ts, event_id, user) of the j-th event."""
        if self.rows is not None:
            row = self.rows[j]
            return row[0], row[1], row[3]
        return self.ts[j], self.eid[j], self.user[j]

    def events(self) -> list[tuple]:
        """Every event as (ts, event_id, amount, user, *distinct values), oldest first."""
        if self.rows is not None:
            return list(self.rows)
        return list(zip(self.ts, self.eid, self.amt, self.user, *self.cols))

    def expired(self) -> int:
        """How many of the oldest events are more than RETAIN_MS behind the newest."""
        if self.rows is not None:
            return bisect_left(self.rows, self.rows[-1][0] - RETAIN_MS, key=_TS)
        return bisect_left(self.ts, self.ts[-1] - RETAIN_MS)

    def find(self, t: int, eid: str) -> int:
        if self.rows is not None:
            rows = self.rows
            for j in range(bisect_left(rows, t, key=_TS), bisect_right(rows, t, key=_TS)):
                if rows[j][1] == eid:
                    return j
            return -1
        for j in range(bisect_left(self.ts, t), bisect_right(self.ts, t)):
            if self.eid[j] == eid:
                return j
        return -1

    def insert(self, t: int, eid: str, amount: int, user: str, values: tuple[str, ...]) -> None:
        rows = self.rows
        if rows is not None:
            row = (t, eid, amount, user, *values)
            if rows and rows[-1][0] > t:                     # late: insert in place
                rows.insert(bisect_right(rows, t, key=_TS), row)
            else:
                rows.append(row)
            if len(rows) > self.SMALL:
                self._grow()
            return
        ts, pre = self.ts, self.pre
        i = len(ts)
        if i and ts[-1] > t:                                 # late: insert in place
            i = bisect_right(ts, t)
            for lst, v in ((ts, t), (self.eid, eid), (self.amt, amount), (self.user, user)):
                lst.insert(i, v)
            pre.insert(i + 1, pre[i])
            pre[i + 1:] = [x + amount for x in pre[i + 1:]]
        else:
            ts.append(t), self.eid.append(eid), self.amt.append(amount), self.user.append(user)
            pre.append(pre[-1] + amount)
        h = t // HOUR_MS
        k = bisect_left(self.hours, h)
        if k < len(self.hours) and self.hours[k] == h:
            self.hmax[k] = max(self.hmax[k], amount)
        else:
            self.hours.insert(k, h)
            self.hmax.insert(k, amount)
        for d, v in enumerate(values):
            self.cols[d].insert(i, v)
            if v:
                o = self.occ[d].setdefault(v, [])
                last = o[-1] if o else None
                insort(o, t)
                if last is None or t > last:
                    if last is not None:
                        self._unlast(d, last, v)
                    k = bisect_right(self.lts[d], t)
                    self.lts[d].insert(k, t)
                    self.lvs[d].insert(k, v)

    def _grow(self) -> None:
        """Small to large: the rows as columns, and the structures built from them."""
        ts, eid, amt, user, *cols = (list(col) for col in zip(*self.rows))
        self.rows = None
        self.ts, self.eid, self.amt, self.user, self.cols = ts, eid, amt, user, cols
        self.pre = [0, *accumulate(amt)]
        self.hours, self.hmax, self.occ, self.lts, self.lvs = [], [], [], [], []
        for t, amount in zip(ts, amt):
            h = t // HOUR_MS
            if self.hours and self.hours[-1] == h:
                self.hmax[-1] = max(self.hmax[-1], amount)
            else:
                self.hours.append(h)
                self.hmax.append(amount)
        for col in cols:
            occ: dict[str, list[int]] = {}
            for t, v in zip(ts, col):
                if v:
                    occ.setdefault(v, []).append(t)
            last = sorted((o[-1], v) for v, o in occ.items())
            self.occ.append(occ)
            self.lts.append([t for t, _ in last])
            self.lvs.append([v for _, v in last])

    def _unlast(self, d: int, t: int, v: str) -> None:
        k = bisect_left(self.lts[d], t)
        while self.lvs[d][k] != v:
            k += 1
        del self.lts[d][k], self.lvs[d][k]

    def _rehour(self, h: int) -> None:
        lo, hi = bisect_left(self.ts, h * HOUR_MS), bisect_left(self.ts, (h + 1) * HOUR_MS)
        k = bisect_left(self.hours, h)
        if k < len(self.hours) and self.hours[k] == h:
            if lo < hi:
                self.hmax[k] = max(self.amt[lo:hi])
            else:
                del self.hours[k], self.hmax[k]

    def remove(self, j: int) -> None:
        """Delete one event (erasure)."""
        if self.rows is not None:
            del self.rows[j]
            return
        t, amount = self.ts[j], self.amt[j]
        for d, col in enumerate(self.cols):
            v = col.pop(j)
            if v:
                o = self.occ[d][v]
                del o[bisect_left(o, t)]
                if not o or o[-1] < t:
                    self._unlast(d, t, v)
                    if o:
                        k = bisect_right(self.lts[d], o[-1])
                        self.lts[d].insert(k, o[-1])
                        self.lvs[d].insert(k, v)
                    else:
                        del self.occ[d][v]
        for lst in (self.ts, self.eid, self.amt, self.user):
            del lst[j]
        self.pre[j + 1:] = [x - amount for x in self.pre[j + 2:]]
        self._rehour(t // HOUR_MS)

    def trim(self, cut: int) -> None:
        """Drop the `cut` oldest events (retention)."""
        if self.rows is not None:
            del self.rows[:cut]
            return
        horizon = self.ts[cut]
        for d, col in enumerate(self.cols):
            for v in set(col[:cut]):
                if v:
                    o = self.occ[d][v]
                    del o[:bisect_left(o, horizon)]
                    if not o:
                        del self.occ[d][v]
            dead = bisect_left(self.lts[d], horizon)    # values whose last occurrence went
            del self.lts[d][:dead], self.lvs[d][:dead], col[:cut]
        for lst in (self.ts, self.eid, self.amt, self.user, self.pre):
            del lst[:cut]
        k = bisect_left(self.hours, horizon // HOUR_MS)
        del self.hours[:k], self.hmax[:k]
        self._rehour(horizon // HOUR_MS)

    def _max(self, lo: int, hi: int) -> int:
        ts, amt = self.ts, self.amt
        h_lo, h_hi = ts[lo] // HOUR_MS, ts[hi - 1] // HOUR_MS
        if h_hi - h_lo < 2:
            return max(amt[lo:hi])
        first_end = bisect_left(ts, (h_lo + 1) * HOUR_MS, lo, hi)
        last_start = bisect_left(ts, h_hi * HOUR_MS, lo, hi)
        top = max(max(amt[lo:first_end]), max(amt[last_start:hi]))
        k1, k2 = bisect_right(self.hours, h_lo), bisect_left(self.hours, h_hi)
        return max(top, max(self.hmax[k1:k2])) if k1 < k2 else top

    def features(self, out: dict[str, float], kind: str, distinct: tuple[str, ...], t: int,
                 extra: tuple[int, tuple[str, ...]] | None) -> None:
        """Exactly what `window_features` returns for these events (the tests hold them equal), into
        `out`. Written for the interpreter: windows holding the same events as the previous one are
        copied, and the late-value correction of distinct counts only runs when t is in the past."""
        if self.rows is not None:
            if self.rows:
                ts, _, amt, _, *cols = zip(*self.rows)
            else:
                ts, amt, cols = (), (), [()] * len(distinct)
            window_features(kind, distinct, ts, amt, cols, t, extra, out)
            return
        since, per_window = _names(kind, distinct)
        ts, pre, amt = self.ts, self.pre, self.amt
        hi = bisect_right(ts, t)
        before = bisect_left(ts, t, 0, hi)
        out[since] = (t - ts[before - 1]) / 1000 if before and ts[before - 1] >= t - RETAIN_MS else -1.0
        dprep = []       # per distinct kind: last occurrences, how many are <= t, and the corrections
        for d, v in enumerate(extra[1] if extra is not None else ("",) * len(distinct)):
            lts, occ = self.lts[d], self.occ[d]
            upto = bisect_right(lts, t)
            late = [] if upto == len(lts) else [_last_upto(occ[x], t) for x in self.lvs[d][upto:]]
            own = _last_upto(occ[v], t) if v and v in occ else (NEVER if v else None)
            dprep.append((lts, upto, late, own))
        ex = extra[0] if extra is not None else None
        prev_lo, n, total, top, counts = -1, 0, 0, None, [0] * len(distinct)
        for w, count_name, sum_name, mean_name, max_name, dnames in per_window:
            a = t - w
            lo = bisect_right(ts, a, 0, hi)
            if lo != prev_lo:
                prev_lo, n, total = lo, hi - lo, pre[hi] - pre[lo]
                top = (max(amt[lo:hi]) if hi - lo <= 64 else self._max(lo, hi)) if n else None
                if ex is not None:
                    n, total = n + 1, total + ex
                    top = ex if top is None or ex > top else top
                for d, (lts, upto, late, own) in enumerate(dprep):
                    c = upto - bisect_right(lts, a, 0, upto)
                    if late:
                        c += sum(x > a for x in late)
                    counts[d] = c + (own is not None and own <= a)   # the new event's value, if new here
            out[count_name] = n
            out[sum_name] = total / MICRO
            out[mean_name] = total / n / MICRO if n else 0.0
            out[max_name] = top / MICRO if top is not None else 0.0
            for name, c in zip(dnames, counts):
                out[name] = c


class WindowStore(ABC):
    """What both stores share: `observe` records and answers, `query` answers as if recorded."""

    @abstractmethod
    def _run(self, obs: Observation, record: bool) -> dict[str, float]:
        """The event's features; with `record`, the event is also added to the windows."""

    def observe(self, obs: Observation) -> dict[str, float]:
        return self._run(obs, record=True)

    def query(self, obs: Observation) -> dict[str, float]:
        """The features `observe` would return, without recording anything (what-if, backtests)."""
        return self._run(obs, record=False)


class MemoryVelocityStore(WindowStore):
    """Velocity series in this process: thread-safe, bounded by LRU eviction of whole entities."""

    name = "velocity"

    def __init__(self, max_entities: int = 1_000_000, distinct: dict[str, tuple[str, ...]] | None = None):
        self.distinct = {k: tuple((distinct or DEFAULT_DISTINCT).get(k, ())) for k in ENTITIES}
        self._max = max_entities
        self._data: OrderedDict[tuple[str, str], _Series] = OrderedDict()
        # user -> (kind, key, event_id, ts) of every entry the user's events left in other entities;
        # kept exactly in step with trimming and eviction, so erasure finds everything. A tuple while
        # short (the collector stops tracking it, as a small series'), a set past INDEX_SMALL entries.
        self._index: dict[str, tuple[_Entry, ...] | set[_Entry]] = {}
        self._lock = threading.Lock()

    def _run(self, obs: Observation, record: bool) -> dict[str, float]:
        amount, t, eid = _check(obs), obs.ts_ms, obs.event_id
        ents = obs.entities
        user = ents.get("user", "")
        out: dict[str, float] = {}
        with self._lock:
            for kind, key in ents.items():
                dkinds = self.distinct[kind]
                values = tuple(ents.get(d, "") for d in dkinds)
                s = self._data.get((kind, key))
                if s is None:
                    s = _Series()
                    if record:
                        self._data[(kind, key)] = s
                elif record:
                    self._data.move_to_end((kind, key))
                dup = s.find(t, eid) >= 0
                s.features(out, kind, dkinds, t, None if dup else (amount, values))
                if record and not dup:
                    owner = user if kind != "user" else ""
                    s.insert(t, eid, amount, owner, values)
                    if owner:
                        self._index_add(owner, (kind, key, eid, t))
                    cut = s.expired()
                    if cut:
                        self._unindex(kind, key, s, cut)
                        s.trim(cut)
            while len(self._data) > self._max:
                (kind, key), s = self._data.popitem(last=False)
                self._unindex(kind, key, s, len(s))
        return out

    def _index_add(self, owner: str, entry: _Entry) -> None:
        ptrs = self._index.get(owner)
        if ptrs is None:
            self._index[owner] = (entry,)
        elif type(ptrs) is tuple:
            if entry not in ptrs:
                self._index[owner] = ptrs + (entry,) if len(ptrs) < INDEX_SMALL else {*ptrs, entry}
        else:
            ptrs.add(entry)

    def _unindex(self, kind: str, key: str, s: _Series, hi: int) -> None:
        for j in range(hi):
            t, eid, owner = s.entry(j)
            if owner and (ptrs := self._index.get(owner)) is not None:
                entry = (kind, key, eid, t)
                if type(ptrs) is tuple:
                    ptrs = tuple(p for p in ptrs if p != entry)
                    if ptrs:
                        self._index[owner] = ptrs
                else:
                    ptrs.discard(entry)
                if not ptrs:
                    del self._index[owner]

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        with self._lock:
            own = self._data.pop(("user", pseudonym), None)
            entries = len(own) if own is not None else 0
            for kind, key, eid, t in self._index.pop(pseudonym, ()):
                s = self._data.get((kind, key))
                j = s.find(t, eid) if s is not None else -1
                if j >= 0:
                    s.remove(j)
                    entries += 1
                    if not len(s):
                        del self._data[(kind, key)]
        return {"velocity_entities": int(own is not None), "velocity_entries": entries}


def open_velocity_store(cache_url: str) -> VelocityStore:
    """memory:// or redis://host:port/db[?prefix=name] (the cache's URL). Redis keys live under
    `<prefix>-vel:`, outside the cache's `<prefix>:` namespace, whose scans read every key as a string."""
    redis_url, prefix = parse_cache_url(cache_url)
    if redis_url is None:
        return MemoryVelocityStore()
    from shopmind.risk.velocity_redis import RedisVelocityStore

    return RedisVelocityStore(redis_url, prefix=f"{prefix}-vel")
