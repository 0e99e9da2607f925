"""The Alembic migrations build exactly the schema the code declares (no drift between the two)."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text

from shopmind.storage import schema
from shopmind.exceptions import StorageError
from shopmind.storage.sql import MIGRATIONS, SqlStore


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


def _upgrade_to(store: SqlStore, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# risk_labels as the first commit of migration 0003 made it (70964b6, 2026-12-01): one label per event
FIRST_RISK_LABELS = ("CREATE TABLE risk_labels (event_id VARCHAR(128) NOT NULL, user_pseudonym VARCHAR(32), "
                     "fraud BOOLEAN NOT NULL, source VARCHAR(16) NOT NULL, labelled_ms BIGINT NOT NULL, "
                     "actor VARCHAR(64) NOT NULL, PRIMARY KEY (event_id))")


@pytest.mark.parametrize("made_by", ["70964b6", "3fbf084"])
def test_a_database_made_before_migration_0003_was_edited_upgrades_to_the_declared_schema(database_url, made_by):
    """0003 was edited in place twice after its first commit (risk_alerts added, then risk_labels given an
    id): a database made in between stays at 0003 without them. One made by 70964b6 failed every command
    after an upgrade ("no such table: risk_alerts"); one made by 3fbf084 upgraded, then failed every export
    and risk training ("no such column: risk_labels.id"). Found by an upgrade review."""
    store = SqlStore(database_url)
    _upgrade_to(store, "0003")
    with store.engine.begin() as conn:  # back to the shape the early 0003 made
        if made_by == "70964b6":
            conn.execute(text("DROP TABLE risk_alerts"))
        conn.execute(text("DROP TABLE risk_labels"))
        conn.execute(text(FIRST_RISK_LABELS))
        conn.execute(text("CREATE INDEX ix_risk_labels_user ON risk_labels (user_pseudonym)"))
        conn.execute(text("INSERT INTO risk_labels VALUES ('e2', 'p1', TRUE, 'analyst', 2000, 'key:a'), "
                          "('e1', 'p1', FALSE, 'chargeback', 1000, 'key:a')"))
    store.migrate_or_explain()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
        labels = conn.execute(text("SELECT id, event_id, fraud FROM risk_labels ORDER BY id")).all()
        conn.execute(text("SELECT dedup_key, delivered_to FROM risk_alerts")).all()
    store.close()
    assert diff == []
    assert [(r.event_id, bool(r.fraud)) for r in labels] == [("e1", False), ("e2", True)]  # kept, oldest first


def test_a_database_a_newer_shopmind_made_is_refused_in_one_line(database_url):
    """A revision this code does not have was a 116-line Alembic traceback from every command."""
    store = SqlStore(database_url)
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(StorageError, match="revision this shopmind does not have.*upgrade shopmind"):
        store.migrate_or_explain()
    with store.engine.connect() as conn:  # and nothing was changed
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099"
    store.close()
