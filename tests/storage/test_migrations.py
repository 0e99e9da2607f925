"""The Alembic migrations build exactly the schema the code declares (no drift between the two)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shopmind.storage import schema
from shopmind.storage.sql import SqlStore


def test_migrated_database_matches_the_declared_schema(tmp_path):
    store = SqlStore(f"sqlite:///{tmp_path / 'm.db'}")
    store.migrate()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    store.close()
    assert diff == []


def test_the_wal_checkpoint_after_an_erasure_waits_out_a_reader_and_says_whether_it_completed(tmp_path):
    """A reader inside a transaction holds the WAL: TRUNCATE is busy. The checkpoint reports that rather
    than claim the WAL was emptied, and completes once the reader is gone."""
    import sqlite3

    path = tmp_path / "w.db"
    store = SqlStore(f"sqlite:///{path}")
    store.migrate()
    with store.transaction() as conn:
        conn.execute(schema.api_keys.delete())  # any write: the WAL has frames
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM api_keys").fetchall()
    assert store.checkpoint(attempts=2, wait_s=0.01) is False
    reader.execute("COMMIT")
    reader.close()
    assert store.checkpoint() is True
    assert not (tmp_path / "w.db-wal").exists() or (tmp_path / "w.db-wal").stat().st_size == 0
    store.close()


def test_events_at_one_time_come_back_in_code_point_order_whatever_the_collation(postgres_url, tmp_path):
    """Ties in time were broken by event_id in the database's collation: a PostgreSQL database with a
    language locale sorted "_x" before "B-1" where SQLite (and Python) put it after, so the same events
    reached a model in another order. The column is given a language collation here, as such a database
    gives every text column."""
    from tests.conftest import make_shop

    shop = make_shop(tmp_path / "home", postgres_url)
    try:
        with shop.store.transaction() as conn:
            if not conn.exec_driver_sql("SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu'").first():
                import pytest

                pytest.skip("this PostgreSQL has no ICU collations to set a language order with")
            conn.exec_driver_sql('ALTER TABLE events ALTER COLUMN event_id TYPE VARCHAR(128) COLLATE "en-x-icu"')
        ids = ["B-1", "a-2", "a10", "_x", "Z9"]
        shop.ingest("users", [{"user_id": "u", "consent_personalization": True}], actor="t")  # training reads them
        shop.ingest("events", [{"event_id": i, "user_id": "u", "type": "view", "item_id": f"item-{i}",
                                "ts": "2026-01-01T00:00:00Z"} for i in ids], actor="t")
        expected = [f"item-{i}" for i in sorted(ids)]  # code point order: "B-1" < "Z9" < "_x" < "a-2" < "a10"
        assert [item for item, *_ in shop.recent_items(shop.pseudonym("u"))] == expected
        assert shop.training_events()["item_id"].to_list() == expected
    finally:
        shop.close()
