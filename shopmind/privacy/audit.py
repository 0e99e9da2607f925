"""Audit log: which API key (or CLI user) read or changed whose personal data, and when.

Entries name the subject by pseudonym only. They outlive erasure on purpose: they are the record
that shows the shop handled the data lawfully (see docs/privacy.md).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from sqlalchemy import Connection, insert, select

from shopmind.storage import schema


def record_audit(conn: Connection, actor: str, action: str, subjects: Iterable[str | None],
                 detail: dict[str, Any] | None = None) -> None:
    """Append one entry per subject inside the caller's transaction (so it commits with the change)."""
    stamp = int(time.time() * 1000)
    payload = json.dumps(detail or {}, sort_keys=True)
    rows = [{"ts_ms": stamp, "actor": actor, "action": action, "subject_pseudonym": s, "detail": payload}
            for s in subjects]
    if rows:
        conn.execute(insert(schema.audit_log), rows)


def audit_entries(conn: Connection, subject: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Newest first; optionally only the entries about one subject."""
    a = schema.audit_log
    query = select(a).order_by(a.c.id.desc()).limit(limit)
    if subject is not None:
        query = query.where(a.c.subject_pseudonym == subject)
    return [dict(r._mapping) for r in conn.execute(query)]
