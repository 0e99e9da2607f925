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
