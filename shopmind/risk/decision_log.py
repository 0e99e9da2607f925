"""The decision log: every risk decision is committed to the database before it is answered.

One fsync per decision would cap the service at a few thousand decisions a second at best and put the
disk's latency into every checkout. Decisions are therefore group-committed: callers hand their row to
one writer thread, which inserts whatever has queued up in one transaction and then releases all those
callers at once. A caller is answered only after its transaction committed (SQLite runs with
synchronous=FULL, PostgreSQL with its default synchronous_commit), so an acknowledged decision survives
a crash or SIGKILL of the service; under load, many decisions share one commit.

Erasure: a decision about a user whose erasure was recorded after the event's time is not written (the
caller gets the error a late retry gets) and the user's velocity entries are erased again. The check
reads the erasure receipts inside the group's transaction, which holds off erasures until it commits
(SqlStore.hold_erasures), so a decision either commits before an erasure begins, and the erasure removes
it, or sees the erasure. Each process's own copy of the receipts (RiskService) is up to a second behind
erasures made elsewhere; this check is not.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from shopmind.exceptions import InvalidInputError, StorageError
from shopmind.privacy.audit import record_audit
from shopmind.privacy.erasure import erased_in_transaction
from shopmind.storage import schema
from shopmind.storage.sql import SqlStore

log = logging.getLogger(__name__)
MAX_GROUP = 512
VAULTED_KEEP = 1_000_000  # pseudonyms remembered as vaulted (about 100 MB at most)


@dataclass
class Entry:
    """One decision and what must commit with it: the case it opens, the account it freezes."""

    decision: dict[str, Any]
    case: dict[str, Any] | None = None
    freeze: dict[str, Any] | None = None    # a risk_accounts row; its audit entry is written alongside
    raw_user: str | None = None             # the user's raw id, vaulted with the decision (privacy/vault.py)
    done: Future = field(default_factory=Future)


class DecisionLog:
    """Durable, group-committed appends to `risk_decisions` (with the cases and freezes they cause)."""

    def __init__(self, store: SqlStore, forget: Callable[[str], Any] | None = None,
                 vault: Callable[[Any, dict[str, str]], None] | None = None):
        self.store = store
        self._forget = forget or (lambda _pseudonym: None)  # erase a refused user's velocity entries again
        self._vault = vault or (lambda _conn, _mapping: None)  # (conn, raw id -> pseudonym) into the vault
        # Pseudonyms this log has seen vaulted by a committed transaction: not read again (a read per
        # group cost about 8% of a decision's CPU). Not trusted for a user with an erasure receipt, which
        # the commit reads anyway: an erasure removes the vault row, and a later decision vaults it again.
        self._vaulted: set[str] = set()
        self._queue: queue.Queue[Entry | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_writer(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="risk-decision-log", daemon=True)
                    self._thread.start()

    def submit(self, decision: dict[str, Any], case: dict[str, Any] | None = None,
               freeze: dict[str, Any] | None = None, raw_user: str | None = None) -> Future:
        """Queue a decision row (and the case it opens, the freeze it causes, the vault row of its user's
        raw id); the future resolves once all of them are committed, in one transaction."""
        self._ensure_writer()
        entry = Entry(decision, case, freeze, raw_user)
        self._queue.put(entry)
        return entry.done

    def write(self, decision: dict[str, Any], case: dict[str, Any] | None = None,
              freeze: dict[str, Any] | None = None, timeout: float = 30.0) -> None:
        self.submit(decision, case, freeze).result(timeout)

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
            try:
                self._commit(group)
            except BaseException as exc:  # the writer must outlive anything one group does
                log.error("risk decision log: unexpected %s; the group's callers get the error", type(exc).__name__)
                _settle(group, StorageError(f"decision log write failed: {type(exc).__name__}"))

    def _commit(self, group: list[Entry]) -> None:
        refused: list[Entry] = []
        try:
            with self.store.transaction() as conn:
                group, refused, erased = self._split_erased(conn, group)
                vaulting = {e.raw_user: p for e in group if e.raw_user is not None
                            and (p := e.decision.get("user_pseudonym")) and (p not in self._vaulted or p in erased)}
                if group:
                    conn.execute(insert(schema.risk_decisions), [e.decision for e in group])
                    self._vault(conn, vaulting)
                cases = [e.case for e in group if e.case is not None]
                if cases:
                    conn.execute(insert(schema.risk_cases), cases)
                freezes = {e.freeze["pseudonym"]: e.freeze for e in group if e.freeze is not None}
                if freezes:
                    # what the table holds, not this process's memory: another worker or an analyst may
                    # have frozen the account since this process last read the table
                    a = schema.risk_accounts
                    before = dict(conn.execute(select(a.c.pseudonym, a.c.frozen).where(a.c.pseudonym.in_(list(freezes)))).all())
                    columns = ("pseudonym", "frozen", "updated_ms", "actor")
                    self.store.upsert(conn, "risk_accounts", [{c: r[c] for c in columns} for r in freezes.values()])
                    for row in freezes.values():
                        record_audit(conn, row["actor"], "risk.account.freeze", [row["pseudonym"]],
                                     {"before": bool(before.get(row["pseudonym"])), "after": True,
                                      "reason": row.get("reason", "")})
        except Exception as exc:  # nothing of the group was committed
            group = group + refused  # nothing was committed: every caller is retried or failed
            if isinstance(exc.__cause__, IntegrityError) and len(group) > 1:
                # One bad row (a duplicate decision id) must not fail its neighbours: retry one by one.
                # Only then: with the database down, row-by-row retries would stall every caller.
                for entry in group:
                    self._commit([entry])
                return
            log.error("risk decision log: a group of %d decisions failed to commit (%s)", len(group),
                      type(exc).__name__)
            _settle(group, exc if isinstance(exc, StorageError) else
                    StorageError(f"decision log write failed: {type(exc).__name__}"))
            return
        if len(self._vaulted) > VAULTED_KEEP:  # bounded: the next decisions of the forgotten read again
            self._vaulted.clear()
        self._vaulted.update(vaulting.values())
        _settle(group, None)
        if refused:
            for pseudonym in {e.decision["user_pseudonym"] for e in refused}:
                try:  # what the decision added to the windows after the erasure emptied them
                    self._forget(pseudonym)
                except Exception as exc:  # noqa: BLE001 - the caller still gets its refusal
                    log.error("risk decision log: erasing a refused user's velocity entries failed (%s)",
                              type(exc).__name__)
            _settle(refused, InvalidInputError(
                "this user was erased after this event's time (ts_ms): a late retry of an erased user's event "
                "is not decided, and nothing was recorded", field="user_id"))

    def _split_erased(self, conn, group: list[Entry]) -> tuple[list[Entry], list[Entry], dict[str, int]]:
        """(the entries to write, those about users erased after their event's time: a late retry that
        reached this process before it learnt of the erasure, or a decision made while the erasure ran;
        and the group's users with an erasure receipt, with its time)."""
        erased = erased_in_transaction(self.store, conn, {e.decision.get("user_pseudonym") for e in group} - {None})
        if not erased:
            return group, [], erased
        kept, refused = [], []
        for e in group:
            user = e.decision.get("user_pseudonym")
            (refused if user in erased and e.decision["ts_ms"] <= erased[user] else kept).append(e)
        return kept, refused, erased

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)


def _settle(group: list[Entry], error: BaseException | None) -> None:
    """Resolve each caller's future once; a caller that gave up (cancelled) is skipped, not crashed on."""
    for entry in group:
        if entry.done.done() or not entry.done.set_running_or_notify_cancel():
            continue
        if error is None:
            entry.done.set_result(None)
        else:
            entry.done.set_exception(error)
