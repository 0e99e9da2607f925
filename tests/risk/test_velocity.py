"""Velocity features: exact at window edges, with late and out-of-order events, in process and in Redis."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from shopmind.exceptions import ConfigError, InvalidInputError, StorageError
from shopmind.risk.velocity import (
    DAY_MS,
    DEFAULT_DISTINCT,
    HOUR_MS,
    RETAIN_MS,
    WINDOWS,
    MemoryVelocityStore,
    Observation,
    _Series,
    feature_names,
    open_velocity_store,
)
from shopmind.risk.velocity_redis import RedisVelocityStore

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _cleanup(store: RedisVelocityStore) -> None:
    r = store._r
    keys = list(r.scan_iter(match=store._prefix + b":*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture(params=["memory", "memory-large", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, monkeypatch) -> Iterator:
    if request.param.startswith("memory"):
        if request.param == "memory-large":       # every series past SMALL from its first event
            monkeypatch.setattr(_Series, "SMALL", 0)
        yield open_velocity_store("memory://")
        return
    s = open_velocity_store(request.getfixturevalue("redis_url"))
    assert isinstance(s, RedisVelocityStore)
    yield s
    _cleanup(s)


def obs(eid: str, ts: int, amount: float = 10.0, **entities: str) -> Observation:
    return Observation(eid, ts, amount, entities)


def _window(f: dict[str, float], kind: str, name: str) -> tuple[float, ...]:
    return tuple(f[f"{kind}_{agg}_{name}"] for agg in ("count", "sum", "mean", "max"))


def test_window_edges_are_half_open_on_the_left(store):
    store.observe(obs("a", T0, 5.0, user="u", card="c0", device="d0", ip="i0"))
    store.observe(obs("b", T0 + 1, 2.0, user="u", card="c1", device="d0"))
    for name, w in WINDOWS.items():
        probe = dict(user="u", card="c1", device="d1")
        at_edge = store.query(obs("q", T0 + w, 1.0, **probe))          # "a" exactly w old: out
        assert _window(at_edge, "user", name) == pytest.approx((2, 3.0, 1.5, 2.0)), name
        assert [at_edge[f"user_distinct_{d}_{name}"] for d in ("card", "device", "ip")] == [1, 2, 0], name
        assert at_edge["user_seconds_since_prev"] == (w - 1) / 1000
        inside = store.query(obs("q", T0 + w - 1, 1.0, **probe))       # 1 ms younger: in
        assert _window(inside, "user", name) == pytest.approx((3, 8.0, 8.0 / 3, 5.0)), name
        assert [inside[f"user_distinct_{d}_{name}"] for d in ("card", "device", "ip")] == [2, 2, 1], name
        assert inside["user_seconds_since_prev"] == (w - 2) / 1000
    at_hour = store.query(obs("q", T0 + HOUR_MS, 1.0, user="u"))
    assert at_hour["user_count_1d"] == at_hour["user_count_7d"] == at_hour["user_count_30d"] == 3


def test_window_edges_of_a_busy_entity(store):
    """90 events over 4.5 hours, the first one the largest and the only one with its card, device and ip:
    past the in-process store's small layout and Redis's DIRECT, with windows of more than 64 events
    (the hourly maxima), so each edge goes through the indexed structures rather than the definition."""
    events = [obs("first", T0, 500.0, user="busy", card="c-first", device="d-first", ip="i-first")]
    events += [obs(f"e{i}", T0 + i * 3 * 60_000, 10.0 + i % 11, user="busy", card=f"c{i % 7}", device=f"d{i % 5}")
               for i in range(1, 90)]
    for e in events:
        store.observe(e)
    for name, w in WINDOWS.items():
        for t, first_in in ((T0 + w, False), (T0 + w - 1, True)):
            probe = obs("q", t, 1.0, user="busy", card="c-new", device="d0")
            got = {k: v for k, v in store.query(probe).items() if k.startswith("user_")}
            assert got == pytest.approx(_brute(events, "user", "busy", t, probe)), (name, first_in)
            assert (got[f"user_max_{name}"] == 500.0) is first_in, name
            assert got[f"user_distinct_card_{name}"] == 8 + first_in, name         # c0..c6, c-new
            assert got[f"user_distinct_device_{name}"] == 5 + first_in, name
            assert got[f"user_distinct_ip_{name}"] == first_in, name


def test_observe_counts_the_event_itself_and_query_records_nothing(store):
    first = store.observe(obs("a", T0, 5.0, user="u", card="c"))
    assert first["user_count_1h"] == first["card_count_1h"] == 1
    assert first["user_seconds_since_prev"] == -1.0
    assert "device_count_1h" not in first                          # absent kinds give no keys
    what_if = store.query(obs("b", T0 + 1000, 7.0, user="u"))
    assert what_if["user_count_1h"] == 2 and what_if["user_sum_1h"] == 12.0
    assert store.query(obs("b", T0 + 1000, 7.0, user="u")) == what_if
    assert store.observe(obs("b", T0 + 1000, 7.0, user="u")) == what_if


def test_reobserving_an_event_counts_it_once(store):
    e = obs("a", T0, 5.0, user="u", card="c", ip="i")
    first = store.observe(e)
    assert store.observe(e) == first
    assert store.query(e) == first                                  # already recorded: not added again
    later = store.query(obs("b", T0 + 1, 1.0, user="u", card="c"))
    assert later["user_count_1h"] == later["card_count_1h"] == 2


def test_distinct_counts(store):
    store.observe(obs("1", T0, user="u", card="c1", device="d1", ip="i1"))
    store.observe(obs("2", T0 + 1, user="u", card="c2", device="d1"))
    store.observe(obs("3", T0 + 2, user="u", card="c1"))
    store.observe(obs("4", T0 + 3, user="v", card="c1", device="d2"))
    f = store.query(obs("5", T0 + 2 * HOUR_MS, user="u", card="c3"))
    assert f["user_distinct_card_1h"] == 1                          # only the query's own card
    assert f["user_distinct_card_1d"] == 3
    assert f["user_distinct_device_1d"] == 1                        # events without a device add none
    assert f["user_distinct_ip_1d"] == 1
    g = store.query(obs("6", T0 + 4, card="c1"))
    assert g["card_distinct_user_1h"] == 2 and g["card_distinct_device_1h"] == 2
    h = store.query(obs("7", T0 + 5, device="d1"))
    assert h["device_distinct_user_1h"] == 1 and h["device_distinct_card_1h"] == 2


def test_sum_mean_max(store):
    store.observe(obs("1", T0, 10.0, card="c"))
    store.observe(obs("2", T0 + 2 * HOUR_MS, 30.10, card="c"))
    f = store.observe(obs("3", T0 + 2 * HOUR_MS + 5, 20.0, card="c"))
    assert f["card_sum_1h"] == 50.1 and f["card_mean_1h"] == 25.05 and f["card_max_1h"] == 30.1
    assert f["card_sum_1d"] == 60.1 and f["card_count_1d"] == 3 and f["card_max_1d"] == 30.1
    assert f["card_mean_1d"] == pytest.approx(60.1 / 3)
    empty = store.query(obs("4", T0, 0.0, terminal="t"))
    assert empty["terminal_count_1h"] == 1 and empty["terminal_max_1h"] == 0.0 and empty["terminal_mean_1h"] == 0.0


def test_seconds_since_prev(store):
    store.observe(obs("1", T0, user="u"))
    assert store.observe(obs("2", T0 + 90_000, user="u"))["user_seconds_since_prev"] == 90.0
    assert store.observe(obs("3", T0 + 90_000, user="u"))["user_seconds_since_prev"] == 90.0  # same ts is not "previous"
    late = store.observe(obs("4", T0 + 30_000, user="u"))
    assert late["user_seconds_since_prev"] == 30.0
    assert store.query(obs("5", T0 + 100_000, user="u"))["user_seconds_since_prev"] == 10.0


def test_late_event_counts_only_older_events_and_later_queries_see_it(store):
    for i, dt in enumerate([0, 10, 20, 40, 50]):
        store.observe(obs(f"e{i}", T0 + dt * 60_000, 1.0, user="u", card=f"c{i}"))
    late = store.observe(obs("late", T0 + 30 * 60_000, 100.0, user="u", card="cl"))
    assert late["user_count_1h"] == 4 and late["user_sum_1h"] == 103.0     # e0..e2 and itself
    assert late["user_distinct_card_1h"] == 4
    assert late["user_seconds_since_prev"] == 600.0
    after = store.query(obs("q", T0 + 65 * 60_000, 1.0, user="u"))
    assert after["user_count_1h"] == 6                                      # e1..e4, late, q (e0 is 65 min old)
    assert after["user_max_1h"] == 100.0


def _brute(events: list[Observation], kind: str, key: str, t: int, extra: Observation) -> dict[str, float]:
    """Features straight from the definition, for checking the stores."""
    mine = [e for e in events if e.entities.get(kind) == key and e.ts_ms <= t] + [extra]
    earlier = [e.ts_ms for e in mine if e.ts_ms < t]
    out = {f"{kind}_seconds_since_prev": (t - max(earlier)) / 1000 if earlier else -1.0}
    for name, w in WINDOWS.items():
        win = [e for e in mine if t - w < e.ts_ms]
        micro = [round(e.amount * 1_000_000) for e in win]
        out[f"{kind}_count_{name}"] = len(win)
        out[f"{kind}_sum_{name}"] = sum(micro) / 1e6
        out[f"{kind}_mean_{name}"] = sum(micro) / len(win) / 1e6
        out[f"{kind}_max_{name}"] = max(micro) / 1e6
        for d in DEFAULT_DISTINCT[kind]:
            out[f"{kind}_distinct_{d}_{name}"] = len({e.entities[d] for e in win if d in e.entities})
    return out


def _random_events(seed: int, n: int, span_ms: int, start: int = T0) -> list[Observation]:
    rng = random.Random(seed)
    pools = {"user": 20, "card": 25, "device": 12, "ip": 8, "terminal": 3}
    events = []
    for i in range(n):
        ents = {k: f"{k}{rng.randrange(size)}" for k, size in pools.items() if rng.random() < 0.8}
        ts = start + rng.randrange(span_ms) if rng.random() > 0.1 or not events else events[-1].ts_ms  # some ties
        events.append(Observation(f"ev{i}", ts, round(rng.uniform(0.5, 900), 2), ents))
    return events + rng.sample(events, n // 20)                    # retries of the same events


def _observed(seen: dict[tuple[str, int], Observation], e: Observation) -> dict[str, float]:
    """What observing e answers by the definition, after the events in `seen` (e counts once, if seen)."""
    before = [x for k, x in seen.items() if k != (e.event_id, e.ts_ms)]
    return {name: v for kind, key in e.entities.items() for name, v in _brute(before, kind, key, e.ts_ms, e).items()}


# A stream from the epoch has windows that start before it: "no occurrence" must not read as a time there.
STARTS = pytest.mark.parametrize("start", [T0, 0], ids=["2026", "epoch"])


@STARTS
def test_out_of_order_arrival_matches_in_order_and_the_definition(store, start):
    events = _random_events(1, 200, 20 * DAY_MS, start)
    in_order = sorted(events, key=lambda e: e.ts_ms)
    shuffled = random.Random(2).sample(events, len(events))
    end = max(e.ts_ms for e in events) + 1
    for arrival, tag in ((in_order, "a"), (shuffled, "b")):
        seen: dict[tuple[str, int], Observation] = {}
        for e in arrival:
            tagged = {k: f"{tag}{v}" for k, v in e.entities.items()}
            got = store.observe(Observation(e.event_id, e.ts_ms, e.amount, tagged))
            assert got == pytest.approx(_observed(seen, e)), (tag, e.event_id)
            seen[(e.event_id, e.ts_ms)] = e
    unique = list({(e.event_id, e.ts_ms): e for e in events}.values())
    for kind in DEFAULT_DISTINCT:
        for key in sorted({e.entities[kind] for e in events if kind in e.entities}):
            probe = Observation("probe", end, 3.0, {kind: key})
            expected = _brute(unique, kind, key, end, probe)
            for tag in "ab":
                got = store.query(Observation("probe", end, 3.0, {kind: f"{tag}{key}"}))
                assert got == pytest.approx(expected), (kind, tag)


def test_retention_drops_events_older_than_30_days_plus_margin(store):
    store.observe(obs("old", T0, 5.0, user="u", card="c"))
    store.observe(obs("mid", T0 + 20 * DAY_MS, 5.0, user="u", card="c"))
    assert store.query(obs("q", T0 + 1, user="u"))["user_count_1h"] == 2     # backtest inside retention
    store.observe(obs("new", T0 + RETAIN_MS + 1, 5.0, user="u"))
    f = store.query(obs("q", T0 + 1, user="u"))
    assert f["user_count_1h"] == 1 and f["user_seconds_since_prev"] == -1.0  # "old" is gone
    assert store.query(obs("q", T0 + 1, card="c"))["card_count_1h"] == 2     # the card had no newer event


def _leftovers(store, needle: str) -> list[str]:
    """Every place the needle still appears in the store (keys, members, index)."""
    found = []
    if isinstance(store, MemoryVelocityStore):
        for (kind, key), s in store._data.items():
            columns = (*s.events(), *(s.lvs or ()), *(s.occ or ()))
            if needle in key or any(needle in str(v) for col in columns for v in col):
                found.append(kind)
        found += [u for u in store._index if needle in u]
        return found
    r = store._r
    for key in r.scan_iter(match=store._prefix + b":*", count=1000):
        if r.type(key) == b"hash":                                  # the hour tree: fields and "count sum max"
            content = [x for item in r.hgetall(key).items() for x in item]
        else:
            content = r.zrange(key, 0, -1)
        if needle.encode() in key or any(needle.encode() in m for m in content):
            found.append(key.decode())
    return found


def test_erasure_removes_the_users_traces_from_every_entity(store):
    store.observe(obs("1", T0, 1234.56, user="erased-u", card="c", device="d", ip="i", terminal="t"))
    store.observe(obs("2", T0 + 10, 99.0, user="erased-u", card="c2", device="d"))
    store.observe(obs("3", T0 + 20, 5.0, user="kept-v", card="c", device="d", terminal="t"))
    before = store.query(obs("q", T0 + 30, 1.0, card="c", device="d"))
    assert before["card_distinct_user_1h"] == 2 and before["card_count_1h"] == 3
    assert before["device_distinct_card_1h"] == 2

    assert store.erase_subject("erased-u") == {"velocity_entities": 1, "velocity_entries": 2 + 4 + 2}
    after = store.query(obs("q", T0 + 30, 1.0, card="c", device="d", user="erased-u"))
    assert after["card_distinct_user_1h"] == 2 and after["card_count_1h"] == 2   # kept-v and the query's own user
    assert after["card_sum_1h"] == 6.0 and after["device_distinct_card_1h"] == 1
    assert after["user_count_1h"] == 1 and after["user_seconds_since_prev"] == -1.0
    assert store.query(obs("q", T0 + 30, 1.0, card="c2"))["card_count_1h"] == 1
    assert _leftovers(store, "erased-u") == []
    assert _leftovers(store, "1234560000") == []                   # its amount is nowhere either
    assert store.erase_subject("erased-u") == {"velocity_entities": 0, "velocity_entries": 0}
    assert store.query(obs("q", T0 + 30, 1.0, user="kept-v"))["user_count_1h"] == 2


def test_erasure_finds_entries_in_entities_that_had_no_later_event(store):
    """A replay writes months of history in seconds: the user's later events are far past the entry their
    first event left on a card nobody used since, and the card still holds it. Erasure must find it."""
    store.observe(obs("o1", T0, 10.0, user="replayed-u", card="C"))
    store.observe(obs("o2", T0 + 64 * DAY_MS, 10.0, user="replayed-u", card="D"))
    store.observe(obs("o3", T0 + 128 * DAY_MS, 10.0, user="replayed-u", card="D"))
    assert store.query(obs("q", T0 + 1, 1.0, card="C"))["card_distinct_user_1h"] == 1
    store.erase_subject("replayed-u")
    assert store.query(obs("q", T0 + 1, 1.0, card="C"))["card_distinct_user_1h"] == 0
    assert _leftovers(store, "replayed-u") == []


def test_invalid_input_is_refused_without_echoing_ids(store):
    with pytest.raises(InvalidInputError) as err:
        store.observe(obs("1", T0, email="secret@example.com"))
    assert "secret" not in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        store.observe(obs("1", T0, user="bad\x1fkey"))
    assert "bad" not in str(err.value)
    with pytest.raises(InvalidInputError):
        store.observe(Observation("1", T0, float("nan"), {"user": "u"}))


class _AlwaysBusy(RedisVelocityStore):
    DIRECT = 2          # every entity with 2+ events goes through the hour tree and the distinct sets


@pytest.mark.redis
@STARTS
@pytest.mark.parametrize("busy", [False, True], ids=["default", "tree-path"])
def test_memory_and_redis_agree_on_a_random_stream_with_shuffled_arrival(redis_url, busy, start):
    events = _random_events(7, 500, 45 * DAY_MS, start)           # longer than the retention
    rng = random.Random(8)
    arrival = sorted(events, key=lambda e: e.ts_ms + rng.uniform(0, 3 * DAY_MS))
    memory = MemoryVelocityStore()
    redis_store = open_velocity_store(redis_url)
    if busy:          # same prefix, structures built at 2 events and dropped below (retention, erasure)
        redis_store = _AlwaysBusy(redis_store._r, prefix=redis_store._prefix.decode())
    try:
        for e in arrival:
            assert memory.observe(e) == redis_store.observe(e)
        end = max(e.ts_ms for e in events) + 1
        unique = list({(e.event_id, e.ts_ms): e for e in events}.values())
        for kind in DEFAULT_DISTINCT:
            for key in sorted({e.entities[kind] for e in events if kind in e.entities}):
                probe = Observation("probe", end, 1.5, {kind: key})
                got = memory.query(probe)
                assert got == redis_store.query(probe)
                assert got == pytest.approx(_brute(unique, kind, key, end, probe))
        keys = [(k, v) for k in DEFAULT_DISTINCT for v in sorted({e.entities[k] for e in events if k in e.entities})]
        for back in (0, HOUR_MS // 2, 3 * DAY_MS, 29 * DAY_MS + 7):       # backtests look into the past
            for k, v in keys:
                probe = Observation("probe", end - back, 2.0, {k: v, "card": "card1"})
                assert memory.query(probe) == redis_store.query(probe)
        for erased in ("user3", "user5"):
            assert memory.erase_subject(erased) == redis_store.erase_subject(erased)
        kept = [e for e in unique if e.entities.get("user") not in ("user3", "user5")]
        for k, v in keys:
            probe = Observation("probe", end, 1.5, {k: v})
            assert memory.query(probe) == redis_store.query(probe) == pytest.approx(_brute(kept, k, v, end, probe))
    finally:
        _cleanup(redis_store)


def _index_of(store: MemoryVelocityStore) -> dict[str, set]:
    return {user: set(entries) for user, entries in store._index.items()}


def _entries_of(store: MemoryVelocityStore) -> dict[str, set]:
    """What the erasure index should hold: every entry a user's event left in another entity."""
    expected: dict[str, set] = {}
    for (kind, key), s in store._data.items():
        for t, eid, _, owner, *_ in s.events():
            if owner:
                expected.setdefault(owner, set()).add((kind, key, eid, t))
    return expected


@STARTS
def test_small_and_large_series_answer_alike_through_growth_retention_and_erasure(monkeypatch, start):
    """A series is tuples up to _Series.SMALL events and indexed lists past it: a stream longer than the
    retention, arriving shuffled, gets the same answers with every series small, every series large, and
    the default (series growing from one to the other mid-stream), and they match the definition."""
    events = _random_events(7, 500, 45 * DAY_MS, start)
    rng = random.Random(8)
    arrival = sorted(events, key=lambda e: e.ts_ms + rng.uniform(0, 3 * DAY_MS))
    stores = {}
    for name, small in (("default", _Series.SMALL), ("all large", 0), ("all small", 10**6)):
        monkeypatch.setattr(_Series, "SMALL", small)
        store = MemoryVelocityStore()
        stores[name] = store, [store.observe(e) for e in arrival]
    (default, answers), *others = stores.values()
    assert all(other_answers == answers for _, other_answers in others)
    large = [s for s in default._data.values() if s.pre is not None]
    assert large and len(large) < len(default._data)               # the default run holds both kinds
    end = max(e.ts_ms for e in events) + 1
    unique = list({(e.event_id, e.ts_ms): e for e in events}.values())
    kept = [e for e in unique if e.entities.get("user") not in ("user3", "user5")]
    keys = [(k, v) for k in DEFAULT_DISTINCT for v in sorted({e.entities[k] for e in events if k in e.entities})]
    for store, _ in stores.values():
        assert _index_of(store) == _entries_of(store)           # erasure's index in step with retention
    assert any(type(p) is tuple for p in default._index.values())
    assert any(type(p) is set for p in default._index.values())  # ... in both of its forms
    erased = [[store.erase_subject(u) for u in ("user3", "user5")] for store, _ in stores.values()]
    assert erased[0] == erased[1] == erased[2] and erased[0][0]["velocity_entries"] > 0
    for store, _ in stores.values():
        assert _index_of(store) == _entries_of(store)
        assert _leftovers(store, "user3") == _leftovers(store, "user5") == []
    for k, v in keys:
        probe = Observation("probe", end, 1.5, {k: v})
        expected = _brute(kept, k, v, end, probe)
        for store, _ in stores.values():
            assert store.query(probe) == pytest.approx(expected), (k, v)


def test_memory_store_evicts_whole_entities_past_its_bound():
    store = MemoryVelocityStore(max_entities=3)
    for i in range(5):
        store.observe(obs(str(i), T0 + i, user=f"u{i}", card="c"))
    assert len(store._data) == 3
    assert store.query(obs("q", T0 + 10, card="c"))["card_count_1h"] == 6   # the card stays (recently used)
    assert store.query(obs("q", T0 + 10, user="u0"))["user_count_1h"] == 1
    assert store.erase_subject("u4")["velocity_entries"] == 2


def test_redis_failure_is_a_storage_error_without_ids():
    store = RedisVelocityStore("redis://127.0.0.1:1/0")
    with pytest.raises(StorageError) as err:
        store.observe(obs("1", T0, user="someone"))
    assert "someone" not in str(err.value)


def test_open_velocity_store_and_feature_names():
    assert isinstance(open_velocity_store("memory://"), MemoryVelocityStore)
    with pytest.raises(ConfigError):
        open_velocity_store("postgres://x")
    names = feature_names()
    assert len(names) == len(set(names)) == 5 * (1 + 4 * 4) + 4 * sum(len(d) for d in DEFAULT_DISTINCT.values())
    full = MemoryVelocityStore().observe(obs("1", T0, user="u", card="c", device="d", ip="i", terminal="t"))
    assert sorted(full) == sorted(names)
