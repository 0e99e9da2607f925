"""Data-subject access: everything shopmind holds about one user, decrypted, as plain JSON."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from shopmind.config import PURPOSES
from shopmind.exceptions import NotFoundError
from shopmind.privacy.audit import audit_entries, record_audit
from shopmind.privacy.crypto import FieldCipher
from shopmind.privacy.vault import FIELD as VAULT_FIELD
from shopmind.storage import schema
from shopmind.storage.sql import SqlStore

PII_FIELDS = ("email", "phone", "address")


def export_subject(store: SqlStore, cipher: FieldCipher, pseudonym: str, actor: str,
                   raw_user_id: str | None = None) -> dict[str, Any]:
    """The subject's profile and consent, their rows in every other table that holds rows about a user
    (events, orders, payments, risk decisions with their features, labels, cases, the account's freeze
    state: schema.SUBJECT_TABLES, which erasure walks too), the risk lists naming them, and the audit
    trail about them. `raw_user_id`, the id asked for, names a user whose raw id was never vaulted (rows
    written before every writer vaulted it: privacy/vault.py)."""
    with store.transaction() as conn:
        vault = conn.execute(select(schema.identity_vault).where(schema.identity_vault.c.pseudonym == pseudonym)).first()
        profile_row = conn.execute(select(schema.users).where(schema.users.c.pseudonym == pseudonym)).first()
        profile: dict[str, Any] | None = None
        if profile_row is not None:
            m = profile_row._mapping
            profile = {f: cipher.decrypt(f"users.{f}", m[f"{f}_enc"]) for f in PII_FIELDS}
            profile.update(country=m["country"], age_band=m["age_band"], signup_ms=m["signup_ms"], attributes=json.loads(m["attributes"]),
                           consent={p: m[f"consent_{p}"] for p in PURPOSES},
                           created_ms=m["created_ms"], updated_ms=m["updated_ms"])
        held: dict[str, list[dict[str, Any]]] = {}
        for table, column in schema.SUBJECT_TABLES.items():
            if table in ("users", "identity_vault"):  # the profile and the raw id, above and below
                continue
            tbl = schema.metadata.tables[table]
            query = select(tbl).where(tbl.c[column] == pseudonym)
            order = next((c for c in ("ts_ms", "labelled_ms", "opened_ms", "updated_ms") if c in tbl.c), None)
            rows = conn.execute(query.order_by(tbl.c[order]) if order else query).all()
            held[table] = [{k: v for k, v in r._mapping.items() if k != column} for r in rows]
        lists = schema.risk_list_entries
        held["risk_list_entries"] = [  # lists of kind "user" hold the pseudonym as their token
            {k: v for k, v in r._mapping.items() if k != "token"} for r in conn.execute(
                select(lists).where(lists.c.kind == "user", lists.c.token == pseudonym).order_by(lists.c.added_ms))]
        if vault is None and profile_row is None and not any(held.values()):
            raise NotFoundError("no data is held for this user")
        record_audit(conn, actor, "user.export", [pseudonym])
        trail = audit_entries(conn, subject=pseudonym)
    return {
        "user_id": cipher.decrypt(VAULT_FIELD, vault.raw_id_enc) if vault is not None else raw_user_id,
        "pseudonym": pseudonym,
        "profile": profile,
        **held,
        "audit": [{k: v for k, v in e.items() if k != "subject_pseudonym"} for e in trail],
    }
