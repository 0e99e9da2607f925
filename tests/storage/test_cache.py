"""Cached per-user lists against events that arrive while a reader is between its database read and its
fill: the list's generation turns the stale fill away (in process and in Redis)."""

from __future__ import annotations

import pytest

from shopmind.shop import BOUGHT, RECENT
from shopmind.storage.cache import MemoryCache, open_cache
from tests.conftest import event, make_shop

USER = "cache-subject-1"


@pytest.fixture(params=["memory", "redis"])
def cache_url(request):
    return "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")


def test_an_event_that_commits_during_a_read_keeps_the_stale_list_out_of_the_cache(tmp_path, cache_url):
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}", cache_url=cache_url)
    try:
        shop.ingest("events", [event(i, USER, item=f"i{i}") for i in range(3)], actor="t")
        pseudonym = shop.pseudonym(USER)
        read = shop.store.fetch_all
        arrived = []

        def read_then_ingest(sql, params=()):
            rows = read(sql, params)
            if "FROM events" in sql and not arrived:  # the worst moment: after the read, before the fill
                arrived.append(True)
                shop.ingest("events", [event(50, USER, kind="purchase", item="i9")], actor="t")
            return rows

        shop.store.fetch_all = read_then_ingest
        stale = shop.recent_items(pseudonym)
        assert arrived and [r[0] for r in stale] == ["i0", "i1", "i2"]  # the reader answered from its read
        assert shop.cache.get(RECENT, pseudonym) is None  # ... and did not cache it as the latest
        shop.store.fetch_all = read
        fresh = shop.recent_items(pseudonym)
        assert fresh[-1][0] == "i9" and shop.cache.get(RECENT, pseudonym) == fresh  # a clean read fills
        assert shop.purchased_items(pseudonym) == {"i9"} and shop.cache.get(BOUGHT, pseudonym) == ["i9"]
        shop.ingest("events", [event(60, USER, item="i10")], actor="t")
        assert shop.cache.get(RECENT, pseudonym)[-1][0] == "i10"  # a cached list is extended in place
    finally:
        shop.close()


def test_generations_bump_on_every_change_and_only_for_that_list(cache_url):
    cache = open_cache(cache_url)
    assert cache.generation(RECENT, "p1") is None
    assert cache.fill(RECENT, "p1", [1], generation=None)  # nothing changed since the read
    cache.append_if_present(RECENT, "p1", [2], keep=10)
    after_append = cache.generation(RECENT, "p1")
    assert after_append is not None and cache.get(RECENT, "p1") == [1, 2]
    assert not cache.fill(RECENT, "p1", [1], generation=None)  # read before the append: refused
    assert cache.get(RECENT, "p1") == [1, 2]
    cache.delete(RECENT, ["p1"])
    assert cache.generation(RECENT, "p1") != after_append and cache.get(RECENT, "p1") is None
    assert cache.fill(RECENT, "p1", [1, 2], generation=cache.generation(RECENT, "p1"))
    assert cache.generation(BOUGHT, "p1") is None and cache.generation(RECENT, "p2") is None
    assert cache.fill(RECENT, "p2", [5])  # without a generation: not checked (values no event changes)
    # erasure takes the generations with the entries; its fence keeps fills out meanwhile
    cache.erase_subject("p1")
    assert cache.find("p1") == [] and not cache.fill(RECENT, "p1", [1], generation=None)


def test_an_expired_generation_counts_as_none():
    cache = MemoryCache()
    cache.append_if_present(RECENT, "p", [1], keep=5)
    key = f"{RECENT}:p"
    generation, _ = cache._generations[key]
    cache._generations[key] = (generation, 0.0)  # expired long ago: older than any read in flight
    assert cache.generation(RECENT, "p") is None and cache.fill(RECENT, "p", [1], generation=None)


def test_an_append_adds_no_value_the_list_already_holds(cache_url):
    """A reader that read an event between its commit and its append, or a resent batch, must not see it
    twice in the user's history."""
    cache = open_cache(cache_url)
    assert cache.fill(RECENT, "p", [["i1", "view", 1], ["i2", "view", 2]], generation=None)
    cache.append_if_present(RECENT, "p", [["i2", "view", 2], ["i3", "cart", 3], ["i3", "cart", 3]], keep=51)
    assert cache.get(RECENT, "p") == [["i1", "view", 1], ["i2", "view", 2], ["i3", "cart", 3]]


def test_a_value_older_than_the_lists_last_drops_an_ordered_list(cache_url):
    """A late event appended last would be read as the newest: an ordered list is dropped instead, and
    the next reader loads it from the database in order. In-order values still extend it."""
    cache = open_cache(cache_url)
    assert cache.fill(RECENT, "p", [["i1", "view", 10], ["i2", "view", 20]], generation=None)
    cache.append_if_present(RECENT, "p", [["i3", "view", 25], ["i4", "view", 30]], keep=51, order=2)
    assert [v[0] for v in cache.get(RECENT, "p")] == ["i1", "i2", "i3", "i4"]
    cache.append_if_present(RECENT, "p", [["i5", "view", 40], ["late", "view", 15]], keep=51, order=2)
    assert cache.get(RECENT, "p") is None
    # a value equal to one in the list (a resend, or a second real event: the database holds both) and
    # a tie drop it too
    for subject, again in (("r1", ["i2", "view", 20]), ("r2", ["other", "view", 20])):
        assert cache.fill(RECENT, subject, [["i1", "view", 10], ["i2", "view", 20]], generation=None)
        cache.append_if_present(RECENT, subject, [again], keep=51, order=2)
        assert cache.get(RECENT, subject) is None, again
    assert cache.fill(RECENT, "q", [["i1", "view", 10]], generation=None)
    cache.append_if_present(RECENT, "q", [["late", "view", 5]], keep=51)  # unordered lists just append
    assert [v[0] for v in cache.get(RECENT, "q")] == ["i1", "late"]


def test_a_late_event_leaves_no_history_out_of_order(tmp_path, cache_url):
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}", cache_url=cache_url)
    try:
        shop.ingest("events", [event(10 * i, USER, item=f"i{i}") for i in range(6)], actor="t")
        pseudonym = shop.pseudonym(USER)
        assert [r[0] for r in shop.recent_items(pseudonym)] == [f"i{i}" for i in range(6)]
        shop.ingest("events", [event(25, USER, item="late"), event(60, USER, item="i6")], actor="t")
        history = [r[0] for r in shop.recent_items(pseudonym)]
        assert history == ["i0", "i1", "i2", "late", "i3", "i4", "i5", "i6"]
        shop.ingest("events", [event(80, USER, item="i8"), event(70, USER, item="i7")], actor="t")  # newest first
        assert [r[0] for r in shop.cache.get(RECENT, pseudonym)][-2:] == ["i7", "i8"]  # sorted, kept cached
    finally:
        shop.close()


def test_a_generation_that_expired_comes_back_as_a_new_number(cache_url):
    cache = open_cache(cache_url)
    cache.append_if_present(RECENT, "q", [1], keep=5)
    held = cache.generation(RECENT, "q")
    if isinstance(cache, MemoryCache):
        cache._generations[f"{RECENT}:q"] = (held, 0.0)
    else:
        cache._r.delete(cache._generation_key(RECENT, "q"))  # as if it had expired
    cache.append_if_present(RECENT, "q", [2], keep=5)  # an event after the reader took `held`
    assert cache.generation(RECENT, "q") not in (None, held)
    assert not cache.fill(RECENT, "q", [1], generation=held)


def test_no_generation_comes_up_behind_an_erasure_fence(cache_url):
    cache = open_cache(cache_url)
    cache.erase_subject("gone")
    cache.append_if_present(RECENT, "gone", [1], keep=5)
    cache.delete(BOUGHT, ["gone"])
    assert cache.generation(RECENT, "gone") is None and cache.find("gone") == []


def test_a_users_bought_list_keeps_every_purchase_on_append(tmp_path, cache_url):
    """The database read fills the bought list with every item the user bought; an append trimmed it to
    the newest 10,000, so the oldest bought durables were recommended again while the entry lived
    (found by a review). In process and in Redis; a bounded list (the recent events) is still trimmed."""
    from shopmind.shop import BOUGHT_KEEP

    cache = open_cache(cache_url)
    many = [f"sku-{n:05d}" for n in range(10_001)]
    assert cache.fill(BOUGHT, "p", many, generation=None)
    cache.append_if_present(BOUGHT, "p", ["sku-new"], BOUGHT_KEEP)
    assert cache.get(BOUGHT, "p") == [*many, "sku-new"]
    assert cache.fill(RECENT, "q", [1, 2, 3], generation=None)
    cache.append_if_present(RECENT, "q", [4], keep=2)
    assert cache.get(RECENT, "q") == [3, 4]


def test_a_new_sqlite_database_is_owner_only(tmp_path):
    """It holds pseudonymised behaviour, decisions and the audit log; it was created world-readable while
    the key file is 0600 (found by a user review). SQLite gives its WAL and shared-memory files its mode."""
    import os
    import stat

    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        shop.ingest("events", [event(1, USER)], actor="t")
        for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm"):
            path = tmp_path / name
            if path.exists():
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
        assert (tmp_path / "db.sqlite-wal").exists()  # the WAL was checked too
    finally:
        shop.close()
