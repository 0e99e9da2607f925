"""The identity vault: the one place a raw user id is kept (encrypted), so that an export can name the
user and a pseudonym-key rotation can recompute their pseudonym.

Every writer that stores a user's pseudonym anywhere (ingestion, the risk decision log, freezes, user
lists, consent) vaults the raw id in the same transaction: a pseudonym with no vault row would keep its
rows under the old key after a rotation, where an erasure by raw id no longer finds them.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, select

from shopmind.privacy.crypto import FieldCipher
from shopmind.storage import schema
from shopmind.storage.sql import SqlStore

FIELD = "identity_vault.raw_id"  # bound into each ciphertext


def in_vault(conn: Connection, pseudonyms: list[str]) -> set[str]:
    v = schema.identity_vault
    known: set[str] = set()
    for start in range(0, len(pseudonyms), 5000):
        part = pseudonyms[start:start + 5000]
        known.update(p for (p,) in conn.execute(select(v.c.pseudonym).where(v.c.pseudonym.in_(part))))
    return known


def store_in_vault(store: SqlStore, conn: Connection, cipher: FieldCipher, key_id: str,
                   mapping: Mapping[str, str]) -> None:
    """Vault raw id -> pseudonym pairs not vaulted yet (one indexed read; only new ones are encrypted)."""
    if not mapping:
        return
    known = in_vault(conn, list(mapping.values()))
    store.insert_ignore(conn, "identity_vault", [
        {"pseudonym": p, "raw_id_enc": cipher.encrypt(FIELD, raw), "pseudonym_key_id": key_id}
        for raw, p in mapping.items() if p not in known
    ])
