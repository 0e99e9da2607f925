"""The relational store: SQLite (embedded default, WAL) or PostgreSQL, through SQLAlchemy 2.

Bulk writes take each engine's fast path: executemany of INSERT OR IGNORE on SQLite, COPY into a
temporary table then INSERT ... ON CONFLICT on PostgreSQL. A batch is one transaction: it is either
committed whole before the call returns (durable: SQLite runs with synchronous=FULL) or not at all.
Reads for training come out as Polars frames.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import polars as pl
from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from shopmind.config import private_dir
from shopmind.exceptions import ConfigError, StorageError
from shopmind.storage import schema

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for another connection's write lock
MIGRATION_LOCK_KEY = 0x5A0D  # pg_advisory_xact_lock key of SqlStore.migrate
ERASURE_LOCK_WAIT_MS = 100  # each wait of an erasure for batches holding off erasures (PostgreSQL)
ERASURE_LOCK_TRIES = 3600   # about an hour of them


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we acknowledge it, even across power loss, not only process death.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    # Deleted rows are overwritten with zeros, so erased data does not linger in free pages.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def _first_line(exc: SQLAlchemyError) -> str:
    """The error's kind and the driver's first line (which names host and port, never the URL's password)."""
    return f"{type(exc).__name__}: {str(getattr(exc, 'orig', exc)).splitlines()[0][:200]}"


def cannot_open(exc: SQLAlchemyError) -> StorageError:
    """The database could not be reached or read."""
    return StorageError(f"cannot open the database at database_url ({_first_line(exc)})")


class SqlStore:
    """One relational database. Create with `SqlStore(url)`; call `migrate()` once before use."""

    def __init__(self, url: str):
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy raises ArgumentError with the url in the message
            raise ConfigError("database_url is not a valid SQLAlchemy URL") from exc
        backend = parsed.get_backend_name()
        if backend not in {"sqlite", "postgresql"}:
            raise ConfigError(f"database_url scheme {backend!r} is not supported: use sqlite:/// or postgresql://")
        if backend == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.dialect = backend
        self.url = parsed
        if backend == "sqlite":
            pool: dict[str, int] = {}
            if parsed.database and parsed.database != ":memory:":
                private_dir(Path(parsed.database).parent)
                # Created owner-only, as the key file is: it holds pseudonymised behaviour, decisions and
                # the audit log (SQLite gives its -wal and -shm files the database's mode). An existing
                # file keeps the mode its owner gave it.
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                # As many pooled connections as the default API worker threads (api_threads, 32) may
                # read at once: past the pool, every read opened and closed a connection of its own
                # (and ran the pragmas again).
                pool = {"pool_size": 32, "max_overflow": 32}
            self.engine: Engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30},
                                                **pool)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(parsed, pool_size=8, max_overflow=8, pool_pre_ping=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            # One process migrates at a time (`serve --workers N` starts N at once after an upgrade): the
            # others wait, then find the schema current. Without this, two ran the same ALTER TABLE and one
            # failed to start. PostgreSQL: an advisory lock for the transaction; SQLite: the write lock,
            # taken first, which also keeps the DDL inside the transaction (pysqlite opens none for it).
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def migrate_or_explain(self) -> None:
        """`migrate`, with its failures reported as one-line StorageErrors naming the error's kind, not a
        driver or Alembic traceback (the URL and its password are not repeated): a database that cannot
        be reached; one whose schema a newer shopmind made (a revision this code does not have); a
        migration that failed, which changed nothing (it runs in one transaction)."""
        from alembic.util import CommandError

        try:
            with self.engine.connect():
                pass
        except SQLAlchemyError as exc:
            raise cannot_open(exc) from None
        try:
            self.migrate()
        except CommandError as exc:
            raise StorageError(f"the database's schema is at a revision this shopmind does not have ({exc}): a newer "
                               "shopmind made or upgraded it; upgrade shopmind, or restore a backup made with "
                               "this version") from None
        except SQLAlchemyError as exc:
            raise StorageError(f"upgrading the database's schema failed ({_first_line(exc)}); nothing was changed") from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction; committed on success, rolled back on any error."""
        try:
            with self.engine.begin() as conn:
                yield conn
        # The bulk writes call the driver directly (executemany, COPY): its errors do not pass through
        # SQLAlchemy and are wrapped too (the DBAPI's base exception, PEP 249: sqlite3.Error, psycopg.Error).
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise StorageError(f"database operation failed ({type(exc).__name__}); nothing was written") from exc

    def hold_erasures(self, conn: Connection) -> None:
        """Call in a write transaction before reading the erasure receipts: until it ends, no erasure can
        record a receipt, so an erasure this batch did not see starts after the batch committed and
        removes what it wrote (an erasure that completed between the batch's read and its first write
        left the batch's rows behind it). SQLite: the write lock, taken now rather than at the first
        insert (pysqlite opens the transaction only there), unless the transaction holds it already.
        PostgreSQL: a SHARE lock on the receipts, which concurrent batches share and an erasure's
        receipt insert waits for."""
        if self.dialect == "sqlite":
            if not conn.connection.driver_connection.in_transaction:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("LOCK TABLE erasure_receipts IN SHARE MODE")

    def in_code_point_order(self, column: Any) -> Any:
        """`column` for an ORDER BY that must break ties the same way on every backend (and in Python):
        by code point. SQLite compares text as bytes already; a PostgreSQL database with a language
        locale would sort "item-_x" before "item-B-1", and the same events would reach a model in
        another order."""
        return column.collate("C") if self.dialect == "postgresql" else column

    @property
    def code_point_collation(self) -> str:
        """The same, for statement text: appended to a column name in ORDER BY."""
        return ' COLLATE "C"' if self.dialect == "postgresql" else ""

    def lock_for_erasure(self, conn: Connection) -> None:
        """Call in an erasure's receipt transaction before its insert. PostgreSQL: a lock that erasures take
        one at a time, so receipt ids commit in the order they are drawn (readers that follow the newest
        id seen, such as ErasureFollower, would otherwise pass over a receipt committed after a newer one
        for good); it waits for the batches holding off erasures, one short wait at a time, so that an
        erasure queued behind a long import does not stall every later batch queued behind it. SQLite's
        write lock already does both."""
        if self.dialect == "sqlite":
            return
        for attempt in range(ERASURE_LOCK_TRIES):
            conn.exec_driver_sql("SAVEPOINT erasure_lock")
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{ERASURE_LOCK_WAIT_MS}ms'")
            try:
                conn.exec_driver_sql("LOCK TABLE erasure_receipts IN SHARE ROW EXCLUSIVE MODE")
            except OperationalError:  # lock_not_available: a long batch holds off erasures; let others pass
                conn.exec_driver_sql("ROLLBACK TO SAVEPOINT erasure_lock")
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
                continue
            conn.exec_driver_sql("RELEASE SAVEPOINT erasure_lock")
            conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
            return
        raise StorageError("erasure waited too long for batches holding off erasures; run it again")

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of one read-only statement with `?` placeholders, on a pooled driver connection.

        For the hot read paths of serving (a profile, a user's recent items): `transaction()` with a
        Core select spends about 300 µs in SQLAlchemy per call on SQLite, this about 25 µs. The
        statement text must be a constant of the caller; values go in `params`, never into `sql`.
        """
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise StorageError(f"database read failed ({type(exc).__name__})") from exc
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, tuple(params))
                return [tuple(row) for row in cursor.fetchall()]
            finally:
                cursor.close()
        except Exception as exc:
            raise StorageError(f"database read failed ({type(exc).__name__})") from exc
        finally:
            raw.close()  # back to the pool, rolled back: nothing here writes

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # -- bulk writes -------------------------------------------------------------------------------

    def insert_ignore(self, conn: Connection, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows whose primary key is new; return how many were inserted (the rest existed)."""
        if not rows:
            return 0
        tbl = schema.metadata.tables[table]
        columns = [c.name for c in tbl.columns if c.name in rows[0]]
        if self.dialect == "sqlite":
            raw = conn.connection.driver_connection
            before = raw.total_changes
            placeholders = ", ".join("?" for _ in columns)
            sql = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
            raw.cursor().executemany(sql, [tuple(r[c] for c in columns) for r in rows])
            return raw.total_changes - before
        return self._pg_copy_merge(conn, tbl.name, columns, rows, on_conflict="DO NOTHING")

    def upsert(self, conn: Connection, table: str, rows: Sequence[dict[str, Any]], keep: Iterable[str] = (),
               fill: Iterable[str] = ()) -> int:
        """Insert or update rows by primary key. Columns in `keep` are not overwritten on update; columns
        in `fill` are overwritten only by a value (a NULL, a field the update left out, keeps the stored one)."""
        if not rows:
            return 0
        tbl = schema.metadata.tables[table]
        key = [c.name for c in tbl.primary_key.columns]
        columns = [c.name for c in tbl.columns if c.name in rows[0]]
        keep, fill = set(keep), set(fill)
        updated = [c for c in columns if c not in key and c not in keep]
        assignments = ", ".join(f"{c} = COALESCE(excluded.{c}, {table}.{c})" if c in fill else f"{c} = excluded.{c}"
                                for c in updated)
        conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}" if updated else "ON CONFLICT DO NOTHING"
        if self.dialect == "sqlite":
            raw = conn.connection.driver_connection
            placeholders = ", ".join("?" for _ in columns)
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) {conflict}"
            # Last row wins for duplicate keys inside one batch, as it would row by row.
            raw.cursor().executemany(sql, [tuple(r[c] for c in columns) for r in rows])
            return len(rows)
        deduped = list({tuple(r[k] for k in key): r for r in rows}.values())
        return self._pg_copy_merge(conn, table, columns, deduped, on_conflict=conflict.removeprefix("ON CONFLICT "))

    def _pg_copy_merge(self, conn: Connection, table: str, columns: list[str], rows: Sequence[dict[str, Any]],
                       on_conflict: str) -> int:
        raw = conn.connection.driver_connection
        staging = f"_stage_{uuid.uuid4().hex[:12]}"
        cols = ", ".join(columns)
        with raw.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE {staging} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
            with cur.copy(f"COPY {staging} ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(tuple(r[c] for c in columns))
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} ON CONFLICT {on_conflict}")
            inserted = cur.rowcount
            cur.execute(f"DROP TABLE {staging}")
        return inserted

    # -- reads -------------------------------------------------------------------------------------

    def frame(self, query: Any, conn: Connection | None = None, schema_overrides: dict | None = None) -> pl.DataFrame:
        """Run a SELECT and return a Polars frame (columnar, for training and analytics)."""
        try:
            if conn is not None:
                return pl.read_database(query, conn, schema_overrides=schema_overrides, infer_schema_length=None)
            with self.engine.connect() as c:
                return pl.read_database(query, c, schema_overrides=schema_overrides, infer_schema_length=None)
        except SQLAlchemyError as exc:
            raise StorageError(f"database read failed ({type(exc).__name__})") from exc

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.metadata.tables[table])).scalar_one())

    def checkpoint(self, attempts: int = 20, wait_s: float = 0.05) -> bool:
        """SQLite: fold the WAL into the database file and truncate it (after erasure, so no old page
        lingers). A reader in the middle of a transaction holds the WAL: the checkpoint is then busy and
        is tried again for about a second. Returns whether it completed (always True elsewhere); if not,
        the next checkpoint (SQLite's automatic ones, or the next erasure) finishes it."""
        if self.dialect != "sqlite":
            return True
        for attempt in range(attempts):
            with self.engine.connect() as conn:
                # The pool's 30-s busy timeout would have each try wait that long for a reader while
                # holding off every writer (ingestion stalled for the reader's length in a review's run):
                # a short one, so that a busy try gives up at once and writers go on between tries.
                conn.exec_driver_sql("PRAGMA busy_timeout=10")
                try:
                    busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()[0]
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if not busy:
                return True
            time.sleep(wait_s)
        log.warning("the WAL checkpoint after an erasure stayed busy (a long reader); it completes later")
        return False
