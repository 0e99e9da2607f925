"""Erasure: one call removes a user from every store that registered with it, then writes a receipt.

Every store that holds per-user data (the relational tables, the online cache, the model registry, and
each store later issues add) registers an `Erasable`. Erasure is idempotent: running it again after a
failure finishes the job. The receipt names the pseudonym, the time and what was removed, never the
raw id. Ingestion consults receipts so a late retry cannot bring erased events back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import delete, func, insert, select, update

from shopmind.privacy.audit import record_audit
from shopmind.storage import schema
from shopmind.storage.cache import Cache
from shopmind.storage.sql import SqlStore

log = logging.getLogger(__name__)


def erased_in_transaction(store: SqlStore, conn, pseudonyms: set[str]) -> dict[str, int]:
    """Those of `pseudonyms` that were erased, with the time of their latest erasure, read in the caller's
    write transaction after holding off erasures until it ends (SqlStore.hold_erasures): an erasure the
    caller does not see here starts after its commit and removes what it wrote. For writers of a user's
    data (ingestion, the risk decision log) that must drop what predates an erasure."""
    if not pseudonyms:
        return {}
    store.hold_erasures(conn)
    r = schema.erasure_receipts
    erased: dict[str, int] = {}
    names = list(pseudonyms)
    for start in range(0, len(names), 5000):
        query = select(r.c.pseudonym, func.max(r.c.erased_ms)).where(
            r.c.pseudonym.in_(names[start:start + 5000])).group_by(r.c.pseudonym)
        erased.update((pseudonym, int(erased_ms)) for pseudonym, erased_ms in conn.execute(query))
    return erased


class Erasable(Protocol):
    """A store that can forget one data subject. Returns what it removed, by location."""

    name: str

    def erase_subject(self, pseudonym: str) -> dict[str, int]: ...


@dataclass
class ErasureReceipt:
    pseudonym: str
    erased_ms: int
    removed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"pseudonym": self.pseudonym, "erased_ms": self.erased_ms, "removed": self.removed}


class SqlSubjectData:
    """Every row about the subject in the relational tables, deleted in one transaction."""

    name = "database"

    def __init__(self, store: SqlStore):
        self.store = store

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        removed = {}
        with self.store.transaction() as conn:
            for table, column in schema.SUBJECT_TABLES.items():
                tbl = schema.metadata.tables[table]
                removed[f"database.{table}"] = conn.execute(delete(tbl).where(tbl.c[column] == pseudonym)).rowcount
        # Fold the WAL now so the deleted (and zeroed) pages replace the old ones on disk.
        self.store.checkpoint()
        return removed


class CacheSubjectData:
    name = "cache"

    def __init__(self, cache: Cache):
        self.cache = cache

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        return {"cache.entries": self.cache.erase_subject(pseudonym)}


class ErasureRegistry:
    """The stores erasure must reach. A store that holds per-user data and is not here is a bug."""

    def __init__(self, store: SqlStore):
        self.store = store
        self._stores: list[Erasable] = []

    def register(self, erasable: Erasable) -> None:
        if any(s.name == erasable.name for s in self._stores):
            raise ValueError(f"an erasable store named {erasable.name!r} is already registered")
        self._stores.append(erasable)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._stores]

    def erase(self, pseudonym: str, actor: str) -> ErasureReceipt:
        """The receipt is committed first, so ingestion drops the subject's late rows from then on
        (and servers following the receipts forget them: ErasureFollower); then every store forgets
        the subject; then the database is swept once more, for a batch that checked the receipts
        just before they held this one and committed while the stores were being erased. The
        receipt's `removed` is filled in last: one left empty records an erasure that was
        interrupted, and running it again finishes it."""
        receipt = ErasureReceipt(pseudonym=pseudonym, erased_ms=int(time.time() * 1000))
        r = schema.erasure_receipts
        with self.store.transaction() as conn:
            self.store.lock_for_erasure(conn)  # receipts commit in id order; long batches are waited out
            receipt_id = conn.execute(insert(r).values(
                pseudonym=pseudonym, erased_ms=receipt.erased_ms, actor=actor, removed="{}")).inserted_primary_key[0]
            record_audit(conn, actor, "user.erase", [pseudonym], {"stores": self.names})
        for erasable in self._stores:
            receipt.removed.update(erasable.erase_subject(pseudonym))
        for location, count in SqlSubjectData(self.store).erase_subject(pseudonym).items():
            receipt.removed[location] = receipt.removed.get(location, 0) + count
        with self.store.transaction() as conn:
            conn.execute(update(r).where(r.c.id == receipt_id).values(removed=json.dumps(receipt.removed, sort_keys=True)))
        return receipt

    def receipts_after(self, last_id: int) -> tuple[int, list[str]]:
        """(the newest receipt id, the pseudonyms of receipts newer than `last_id`), oldest first."""
        r = schema.erasure_receipts
        with self.store.transaction() as conn:
            rows = conn.execute(select(r.c.id, r.c.pseudonym).where(r.c.id > last_id).order_by(r.c.id)).all()
        return (rows[-1][0] if rows else last_id), [p for _, p in rows]

    def erased_after(self, since_id: int) -> list[str]:
        """The pseudonyms of every erasure recorded after receipt `since_id`. A training notes
        `newest_receipt()` before it reads its data and hands this to `ModelRegistry.register`, which
        scrubs them from the new version under its lock before the version appears: a user erased
        meanwhile (or whose erasure was still running when the job read) was read, so their pseudonym is
        in the new version's lineage, which the erasure could not reach before the version existed."""
        return self.receipts_after(since_id)[1]

    def newest_receipt(self) -> int:
        """The receipt a reader of per-user data starts from (a training's `erased_after`, a follower's first
        poll): every erasure up to it had finished, so what is read next holds none of their subjects.
        That is the newest receipt, unless an erasure is still running (its receipt is committed before
        the stores forget the subject, `erase`): then the one before the oldest such receipt, since the
        subject's rows may still be read. A receipt left empty by an interrupted erasure counts as
        running until a later erasure of the same subject finishes."""
        r = schema.erasure_receipts
        later = schema.erasure_receipts.alias("later")
        finished_later = (select(later.c.id).where(later.c.pseudonym == r.c.pseudonym, later.c.id > r.c.id,
                                                   later.c.removed != "{}").exists())
        with self.store.transaction() as conn:
            running = conn.execute(select(func.min(r.c.id)).where(r.c.removed == "{}", ~finished_later)).scalar()
            if running is not None:
                return int(running) - 1
            return int(conn.execute(select(func.coalesce(func.max(r.c.id), 0))).scalar_one())

    def erased_times(self, pseudonym: str | None = None) -> dict[str, int]:
        """pseudonym -> time of their latest erasure (ms), of everyone erased or of one pseudonym."""
        r = schema.erasure_receipts
        query = select(r.c.pseudonym, func.max(r.c.erased_ms)).group_by(r.c.pseudonym)
        if pseudonym is not None:
            query = query.where(r.c.pseudonym == pseudonym)
        with self.store.transaction() as conn:
            return {p: int(ms) for p, ms in conn.execute(query)}

    def receipts(self, pseudonym: str) -> list[ErasureReceipt]:
        r = schema.erasure_receipts
        with self.store.transaction() as conn:
            rows = conn.execute(select(r).where(r.c.pseudonym == pseudonym).order_by(r.c.id)).all()
        return [ErasureReceipt(row.pseudonym, row.erased_ms, json.loads(row.removed)) for row in rows]


class ErasureFollower:
    """Applies the erasures that other processes record (`shopmind erase-user` from the command line,
    another API worker) to this process's own memory: its in-process cache, velocity windows, state
    refresher and frozen-account set. The database, Redis and model files are shared, and the erasing
    process reached them; what lives in a server's memory only that server can forget.

    A background thread reads the receipts newer than the last one it saw every `interval_s`; receipts
    are committed before the erasure starts (ErasureRegistry.erase), so a server forgets the subject
    while the erasure runs, and the cache's fence stops its requests from caching the subject again."""

    def __init__(self, registry: ErasureRegistry, local: list[Erasable], interval_s: float = 1.0):
        self.registry = registry
        self.local = local
        self.interval_s = interval_s
        self._last = registry.newest_receipt()  # older erasures happened before this process held anything
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0

    def poll(self) -> int:
        """Apply the receipts recorded since the last poll; how many there were."""
        last, pseudonyms = self.registry.receipts_after(self._last)
        for pseudonym in pseudonyms:
            for store in self.local:
                store.erase_subject(pseudonym)
        self._last = last
        self.applied += len(pseudonyms)
        return len(pseudonyms)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shopmind-erasure-follower", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception as exc:  # the database is briefly unreachable: the next poll catches up
                log.warning("following erasures failed: %s", type(exc).__name__)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
