"""Erasure against what runs beside it: late retries, writes and reads in flight, other processes, training.

Each test stages the interleaving deterministically (a hook runs the erasure at the worst moment) and
then checks that nothing about the user is left, or comes back, anywhere.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from shopmind.privacy.erasure import Erasable
from shopmind.shop import CONSENT, RECENT
from shopmind.storage import schema
from tests.conftest import event, make_shop

USER = "race-subject-4711"
OTHER = "bystander-2"


def _count(shop, table, column, value) -> int:
    t = schema.metadata.tables[table]
    with shop.store.transaction() as conn:
        return conn.execute(select(func.count()).select_from(t).where(t.c[column] == value)).scalar_one()


def _orders_and_payments(user: str) -> tuple[list[dict], list[dict]]:
    return ([{"order_id": f"o-{user}", "user_id": user, "ts": "2026-01-05T10:00:00Z", "amount": 30.0}],
            [{"payment_id": f"p-{user}", "order_id": f"o-{user}", "user_id": user, "ts": "2026-01-05T10:00:01Z",
              "amount": 30.0}])


def _fill_shop(shop) -> None:
    shop.ingest("users", [{"user_id": u, "email": f"{u}@example.net", "consent_personalization": True}
                          for u in (USER, OTHER)], actor="t")
    shop.ingest("items", [{"item_id": f"i{n}", "title": f"Item {n}", "category": "A"} for n in range(5)], actor="t")
    shop.ingest("events", [event(n, user=USER, item=f"i{n % 5}") for n in range(6)]
                + [event(100 + n, user=OTHER, item="i1") for n in range(3)], actor="t")


def test_a_late_retry_brings_back_no_row_and_no_raw_id(shop):
    """A client resends the erased user's old events, orders and payments: all dropped, and the identity
    vault (the raw id, encrypted) stays empty for them."""
    _fill_shop(shop)
    orders, payments = _orders_and_payments(USER)
    shop.ingest("orders", orders, actor="t")
    shop.ingest("payments", payments, actor="t")
    pseudonym = shop.pseudonym(USER)
    assert shop.recent_items(pseudonym) and shop.cache.get(RECENT, pseudonym) is not None  # cached before
    shop.erase_user(USER, actor="dpo")
    assert _count(shop, "identity_vault", "pseudonym", pseudonym) == 0

    results = [shop.ingest("events", [event(n, user=USER, item="i1") for n in range(6)], actor="retry"),
               shop.ingest("orders", orders, actor="retry"), shop.ingest("payments", payments, actor="retry")]
    assert [r.dropped_erased for r in results] == [6, 1, 1] and all(r.written == 0 for r in results)
    for table in ("identity_vault", "events", "orders", "payments"):
        column = "pseudonym" if table == "identity_vault" else "user_pseudonym"
        assert _count(shop, table, column, pseudonym) == 0, table
    assert shop.cache.get(RECENT, pseudonym) is None
    # the bystander's rows and vault entry are untouched; a new user in a mixed batch is still vaulted
    shop.ingest("events", [event(200, user="newcomer", item="i2")], actor="t")
    assert _count(shop, "identity_vault", "pseudonym", shop.pseudonym("newcomer")) == 1
    assert _count(shop, "identity_vault", "pseudonym", shop.pseudonym(OTHER)) == 1


class _Meanwhile:
    """An erasable store that runs `action` while the erasure is under way (after the database step)."""

    name = "meanwhile"

    def __init__(self, action):
        self.action = action

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        self.action()
        return {}


def test_rows_written_while_the_erasure_runs_do_not_survive_it(shop):
    _fill_shop(shop)
    pseudonym = shop.pseudonym(USER)
    stores: list[Erasable] = []

    def retry_then_raw_insert():
        # a retry through ingestion sees the receipt, committed before any store was erased: dropped
        assert shop.ingest("events", [event(7, user=USER, item="i2")], actor="retry").dropped_erased == 1
        # a batch that checked the receipts just before they held this one commits anyway: the final sweep
        with shop.store.transaction() as conn:
            conn.execute(schema.events.insert().values(event_id="ev-raced", user_pseudonym=pseudonym, type="view",
                                                       item_id="i3", ts_ms=1, ingested_ms=1))
        stores.append(None)

    shop.erasure.register(_Meanwhile(retry_then_raw_insert))
    receipt = shop.erase_user(USER, actor="dpo")
    assert stores, "the hook ran"
    assert _count(shop, "events", "user_pseudonym", pseudonym) == 0
    assert _count(shop, "identity_vault", "pseudonym", pseudonym) == 0
    assert receipt.removed["database.events"] == 7  # six before, the raced one in the sweep
    stored = shop.erasure.receipts(pseudonym)
    assert len(stored) == 1 and stored[0].removed == receipt.removed  # completed in place


@pytest.fixture(params=["memory", "redis"])
def cache_url(request):
    return "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")


def test_a_read_in_flight_during_the_erasure_cannot_cache_the_user_again(tmp_path, cache_url):
    """A request reads the user's events, the erasure runs, then the request caches what it read: the
    cache's fence turns that write away (in process and in Redis)."""
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}", cache_url=cache_url)
    try:
        _fill_shop(shop)
        pseudonym = shop.pseudonym(USER)
        read = shop.store.fetch_all
        erased = []

        def read_then_erase(sql, params=()):
            rows = read(sql, params)
            if "FROM events" in sql and params and params[0] == pseudonym and not erased:
                erased.append(shop.erase_user(USER, actor="dpo"))
            return rows

        shop.store.fetch_all = read_then_erase
        in_flight = shop.recent_items(pseudonym)
        assert erased and len(in_flight) == 6  # the request answered from what it had read
        assert shop.cache.get(RECENT, pseudonym) is None
        assert not shop.cache.fill(RECENT, pseudonym, in_flight, ttl_s=60)
        assert shop.cache.find(pseudonym) == []
        # someone else's reads are still cached
        shop.recent_items(shop.pseudonym(OTHER))
        assert shop.cache.get(RECENT, shop.pseudonym(OTHER)) is not None
    finally:
        shop.close()


def test_a_consent_read_in_flight_during_a_withdrawal_is_not_cached(tmp_path, cache_url, monkeypatch):
    from shopmind.privacy import consent

    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}", cache_url=cache_url)
    try:
        _fill_shop(shop)
        shop.train(actor="t")  # a few users: the trending fallback alone
        pseudonym = shop.pseudonym(USER)
        flags = consent.consent_flags
        withdrawn = []

        def read_then_withdraw(store, subject, default):
            read = flags(store, subject, default)
            if subject == pseudonym and not withdrawn:
                withdrawn.append(shop.set_consent(USER, {"personalization": False}, actor="user"))
            return read

        monkeypatch.setattr(consent, "consent_flags", read_then_withdraw)
        assert shop.has_consent(pseudonym, "personalization")      # read before the withdrawal committed
        assert withdrawn and shop.cache.get(CONSENT, pseudonym) is None
        assert not shop.has_consent(pseudonym, "personalization")  # the next request sees the withdrawal
        assert not shop.recommend(USER)["personalised"]
    finally:
        shop.close()


def test_a_server_forgets_in_memory_what_another_process_erased(tmp_path):
    """`shopmind erase-user` runs in its own process: the server's in-process cache, velocity windows and
    frozen set are cleared by its erasure follower, which reads the receipts."""
    from shopmind.risk.velocity import Observation

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    server = make_shop(tmp_path / "home", db)
    cli = make_shop(tmp_path / "home", db)
    try:
        _fill_shop(server)
        pseudonym = server.pseudonym(USER)
        follower = server.follow_erasures(interval_s=3600)  # polled by hand below
        server.recent_items(pseudonym)
        server.velocity.observe(Observation("e1", 1_000, 10.0, {"user": pseudonym, "card": "card-tok"}))
        server.risk.freeze(USER, actor="analyst")
        assert server.cache.get(RECENT, pseudonym) is not None and pseudonym in server.risk._frozen

        cli.erase_user(USER, actor="dpo")
        assert server.cache.get(RECENT, pseudonym) is not None  # nothing told the server yet
        assert follower.poll() == 1
        assert server.cache.find(pseudonym) == []
        def probe(user):  # counts the probe itself
            return server.velocity.query(Observation("e2", 2_000, 1.0, {"user": user}))["user_count_1h"]

        assert probe(pseudonym) == probe("never-seen") == 1
        assert pseudonym not in server.risk._frozen
        assert not server.cache.fill(RECENT, pseudonym, [["i1", "view", 1]])  # fenced here too
        assert follower.poll() == 0
    finally:
        server.close()
        cli.close()


def test_a_user_erased_while_a_model_trains_leaves_its_lineage(shop, monkeypatch):
    """The training read the user's events before the erasure reached the database, and registered its
    model after the erasure had scrubbed every existing version: the registry is scrubbed again."""
    _fill_shop(shop)
    pseudonym = shop.pseudonym(USER)
    read = shop.training_events

    def read_then_erase(purpose="personalization"):
        events = read(purpose)
        shop.erase_user(USER, actor="dpo")
        return events

    monkeypatch.setattr(shop, "training_events", read_then_erase)
    result = shop.train(actor="t")
    version = result["popularity"]["version"]
    card = shop.registry.card("popularity", version)
    import polars as pl

    lineage = pl.read_parquet(shop.registry.root / "popularity" / version / "subjects.parquet")["pseudonym"].to_list()
    assert pseudonym not in lineage and shop.pseudonym(OTHER) in lineage
    assert card["erased_since_training"] == 1


def test_an_erasure_waits_for_a_batch_that_checked_the_receipts_before_it(shop, monkeypatch):
    """Before: the erasure ran to completion (receipt, stores, final sweep) between the batch's receipt
    check and its first write, and the batch then committed the erased user's event and raw id."""
    user = "erin@example.com"
    shop.ingest("events", [event(1, user=user)], actor="t")
    checked, release = threading.Event(), threading.Event()
    real = shop.ingestor._erased_before

    def erased_before(conn, pseudonyms):
        found = real(conn, pseudonyms)
        checked.set()
        assert release.wait(20)
        return found

    monkeypatch.setattr(shop.ingestor, "_erased_before", erased_before)
    results = []
    batch = threading.Thread(target=lambda: results.append(
        shop.ingest("events", [event(2, user="newcomer"), event(3, user=user)], actor="etl")))
    batch.start()
    assert checked.wait(20)
    erasure = threading.Thread(target=lambda: shop.erase_user(user, "dpo"))
    erasure.start()
    erasure.join(1.0)
    assert erasure.is_alive()  # it waits for the batch, which did not see it
    release.set()
    batch.join(20)
    erasure.join(30)
    assert not batch.is_alive() and not erasure.is_alive() and results[0].written == 2
    pseudonym = shop.pseudonym(user)
    with shop.store.transaction() as conn:
        events = conn.execute(select(func.count()).select_from(schema.events)
                              .where(schema.events.c.user_pseudonym == pseudonym)).scalar_one()
        vault = conn.execute(select(func.count()).select_from(schema.identity_vault)
                             .where(schema.identity_vault.c.pseudonym == pseudonym)).scalar_one()
    assert (events, vault) == (0, 0)
    assert shop.store.count("events") == 1  # the newcomer's event stays


def test_a_receipt_committed_after_a_newer_one_still_reaches_other_processes(shop, monkeypatch):
    """PostgreSQL draws receipt ids from a sequence: an erasure that drew id 1 and committed after another
    drew id 2 and committed was passed over for good by a follower that polled in between (it asks for
    ids above the newest it saw). Erasures now record their receipts one at a time."""
    import shopmind.privacy.erasure as erasure_module
    from shopmind.shop import Shop

    other = Shop.open(shop.settings)  # a server process with its own in-process cache
    third = Shop.open(shop.settings)  # another eraser (a worker, or `shopmind erase-user`)
    try:
        shop.ingest("events", [event(1, user="alice"), event(2, user="bob")], actor="t")
        alice, bob = shop.pseudonym("alice"), shop.pseudonym("bob")
        other.recent_items(alice), other.recent_items(bob)  # cached in that process
        follower = other.follow_erasures(interval_s=3600)  # polled by hand below
        real, inside, go_on = erasure_module.record_audit, threading.Event(), threading.Event()

        def paused_audit(conn, actor, action, *rest, **kw):  # alice's receipt is inserted, not yet committed
            if action == "user.erase" and not inside.is_set():
                inside.set()
                go_on.wait(30)
            return real(conn, actor, action, *rest, **kw)

        monkeypatch.setattr(erasure_module, "record_audit", paused_audit)
        first = threading.Thread(target=lambda: shop.erase_user("alice", "dpo"))
        first.start()
        assert inside.wait(10)
        second = threading.Thread(target=lambda: third.erase_user("bob", "dpo"))
        second.start()
        second.join(1.5)  # bob's erasure, as far as it gets while alice's receipt is uncommitted
        follower.poll()
        go_on.set()
        first.join(30), second.join(30)
        follower.poll()
        assert other.cache.get(RECENT, alice) is None and other.cache.get(RECENT, bob) is None
    finally:
        third.close()
        other.close()


def test_an_erasure_waiting_for_a_long_import_does_not_stall_other_batches(shop):
    """PostgreSQL: an erasure queued behind a long import's hold on the receipts made every later batch
    queue behind it until the import committed (17 s in a review's run). It now waits in short turns."""
    import time

    if shop.store.dialect != "postgresql":
        pytest.skip("SQLite's one writer serialises batches and erasures whatever the order")
    shop.ingest("events", [event(1, user="alice")], actor="t")
    erased, took = threading.Event(), []
    with shop.store.transaction() as conn:  # a long import: holds off erasures until it commits
        shop.store.hold_erasures(conn)
        eraser = threading.Thread(target=lambda: (shop.erase_user("alice", "dpo"), erased.set()))
        eraser.start()
        time.sleep(0.5)  # the erasure is waiting for the import
        started = time.perf_counter()
        live = threading.Thread(target=lambda: (shop.ingest("events", [event(2, user="bob")], actor="t"),
                                                took.append(time.perf_counter() - started)))
        live.start()  # a live batch of another user
        live.join(3)
        waiting = not erased.is_set()  # nothing the import reads is erased under it
    live.join(30)
    eraser.join(30)
    assert waiting and erased.is_set()
    assert took and took[0] < 1.0, took


def test_an_erasure_beside_a_long_sqlite_reader_neither_waits_for_it_nor_stalls_writers(shop):
    """Each WAL checkpoint try ran the 30-s busy handler while a reader held an old snapshot, holding off
    every writer meanwhile: the erasure took the reader's length and ingestion stalled with it."""
    import sqlite3
    import time

    if shop.store.dialect != "sqlite":
        pytest.skip("the WAL checkpoint is SQLite's")
    shop.ingest("events", [event(1, user="alice"), event(2, user="bob")], actor="t")
    reader = sqlite3.connect(shop.store.url.database, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchone()  # a long read (a training, a report)
    shop.ingest("events", [event(3, user="bob")], actor="t")  # the WAL has frames newer than its snapshot
    took: dict[str, float] = {}

    def erase():
        started = time.perf_counter()
        shop.erase_user("alice", "dpo")
        took["erase"] = time.perf_counter() - started

    eraser = threading.Thread(target=erase)
    eraser.start()
    time.sleep(0.5)
    started = time.perf_counter()
    shop.ingest("events", [event(4, user="carol")], actor="t")
    took["ingest"] = time.perf_counter() - started
    eraser.join(8)
    reader.execute("COMMIT")  # the reader ends only now: 8 s or more after the erasure began
    eraser.join(60)
    reader.close()
    assert took.get("erase", 99) < 5 and took["ingest"] < 2, took
