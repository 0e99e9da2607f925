"""The decision log: every risk decision is committed to the database before it is answered.

One fsync per decision would cap the service at a few thousand decisions a second at best and put the
disk's latency into every checkout. Decisions are therefore group-committed: callers hand their row to
one writer thread, which inserts whatever has queued up in one transaction and then releases all those
callers at once. A caller is answered only after its transaction committed (SQLite runs with
synchronous=FULL, PostgreSQL with its default synchronous_commit), so an acknowledged decision survives
a crash or SIGKILL of the service; under load, many decisions share one commit.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy import insert

from shopmind.exceptions import StorageError
from shopmind.storage import schema
from shopmind.storage.sql import SqlStore

log = logging.getLogger(__name__)
MAX_GROUP = 512


class DecisionLog:
    """Durable, group-committed appends to `risk_decisions` (and case rows opened with them)."""

    def __init__(self, store: SqlStore):
        self.store = store
        self._queue: queue.Queue[tuple[dict[str, Any], dict[str, Any] | None, Future] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_writer(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="risk-decision-log", daemon=True)
                    self._thread.start()

    def submit(self, decision: dict[str, Any], case: dict[str, Any] | None = None) -> Future:
        """Queue a decision row (and the case it opens); the future resolves once both are committed."""
        self._ensure_writer()
        done: Future = Future()
        self._queue.put((decision, case, done))
        return done

    def write(self, decision: dict[str, Any], case: dict[str, Any] | None = None, timeout: float = 30.0) -> None:
        self.submit(decision, case).result(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            self._commit(group)

    def _commit(self, group: list[tuple[dict[str, Any], dict[str, Any] | None, Future]]) -> None:
        decisions = [d for d, _, _ in group]
        cases = [c for _, c, _ in group if c is not None]
        try:
            with self.store.transaction() as conn:
                conn.execute(insert(schema.risk_decisions), decisions)
                if cases:
                    conn.execute(insert(schema.risk_cases), cases)
        except Exception as exc:  # nothing of the group was committed: every caller gets the error
            log.error("risk decision log: a group of %d decisions failed to commit (%s)", len(group),
                      type(exc).__name__)
            if len(group) > 1:  # one bad row (e.g. a duplicate id) must not fail its neighbours
                for item in group:
                    self._commit([item])
                return
            error = StorageError(f"decision log write failed: {type(exc).__name__}")
            for _, _, done in group:
                done.set_exception(error)
            return
        for _, _, done in group:
            done.set_result(None)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)
