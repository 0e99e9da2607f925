"""Erasure: one call removes a user from every store that registered with it, then writes a receipt.

Every store that holds per-user data (the relational tables, the online cache, the model registry, and
each store later issues add) registers an `Erasable`. Erasure is idempotent: running it again after a
failure finishes the job. The receipt names the pseudonym, the time and what was removed, never the
raw id. Ingestion consults receipts so a late retry cannot bring erased events back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import delete, insert, select

from shopmind.privacy.audit import record_audit
from shopmind.storage import schema
from shopmind.storage.cache import Cache
from shopmind.storage.sql import SqlStore


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
        receipt = ErasureReceipt(pseudonym=pseudonym, erased_ms=int(time.time() * 1000))
        for erasable in self._stores:
            receipt.removed.update(erasable.erase_subject(pseudonym))
        with self.store.transaction() as conn:
            conn.execute(insert(schema.erasure_receipts).values(
                pseudonym=pseudonym, erased_ms=receipt.erased_ms, actor=actor,
                removed=json.dumps(receipt.removed, sort_keys=True)))
            record_audit(conn, actor, "user.erase", [pseudonym], {"stores": self.names})
        return receipt

    def receipts(self, pseudonym: str) -> list[ErasureReceipt]:
        r = schema.erasure_receipts
        with self.store.transaction() as conn:
            rows = conn.execute(select(r).where(r.c.pseudonym == pseudonym).order_by(r.c.id)).all()
        return [ErasureReceipt(row.pseudonym, row.erased_ms, json.loads(row.removed)) for row in rows]
