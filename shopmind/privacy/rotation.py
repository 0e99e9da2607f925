"""Key rotation for the encryption keys and the pseudonym key. Run with the service stopped.

Encryption: a new key becomes active, every envelope sealed with an older key is re-encrypted with it,
and with `retire` the keys that no longer seal anything leave the keyring.

Pseudonym: a new key is added (not yet active) and saved; one database transaction recomputes every
user's pseudonym from the raw id in the identity vault and rewrites it in every table; then the new key
becomes active. A crash between the two steps is finished by running the command again: the vault
records which key each pseudonym was made with, and the rerun rebuilds the old-to-new mapping from it.
Derived stores (cache, model lineage, velocity windows) are remapped or dropped through the callbacks
given, after the transaction, on the first run and again on a rerun.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import Connection, bindparam, select, text, update

from shopmind.exceptions import ConfigError
from shopmind.privacy.audit import record_audit
from shopmind.privacy.crypto import FieldCipher
from shopmind.privacy.keys import Keyring
from shopmind.privacy.pseudonym import Pseudonymizer
from shopmind.privacy.vault import FIELD as VAULT_FIELD
from shopmind.storage import schema
from shopmind.storage.sql import SqlStore

# (table, primary key, column, field name bound into the ciphertext)
ENCRYPTED_COLUMNS = [
    ("users", "pseudonym", "email_enc", "users.email"),
    ("users", "pseudonym", "phone_enc", "users.phone"),
    ("users", "pseudonym", "address_enc", "users.address"),
    ("identity_vault", "pseudonym", "raw_id_enc", VAULT_FIELD),
]
BATCH = 2000


def _require_file(key_file: Path | None) -> Path:
    if key_file is None:
        raise ConfigError("keys given inline (SHOPMIND_KEYRING) cannot be rotated in place: rotate a key file")
    return key_file


def keys_in_use(store: SqlStore) -> dict[str, int]:
    """How many envelopes each encryption key still seals."""
    counts: dict[str, int] = {}
    with store.transaction() as conn:
        for table, _, column, _ in ENCRYPTED_COLUMNS:
            tbl = schema.metadata.tables[table]
            for (envelope,) in conn.execute(select(tbl.c[column]).where(tbl.c[column].is_not(None))):
                kid = FieldCipher.key_id_of(envelope)
                counts[kid] = counts.get(kid, 0) + 1
    return counts


def rotate_encryption_key(store: SqlStore, keyring: Keyring, key_file: Path | None, actor: str,
                          retire: bool = False) -> dict:
    path = _require_file(key_file)
    new_id = keyring.encryption.add(Keyring.PREFIXES["encryption"])
    keyring.save(path)  # before re-encrypting: from now on every envelope must stay decryptable
    cipher = FieldCipher(keyring.encryption)
    rewritten = 0
    for table, key, column, field in ENCRYPTED_COLUMNS:
        tbl = schema.metadata.tables[table]
        while True:
            with store.transaction() as conn:
                rows = conn.execute(
                    select(tbl.c[key], tbl.c[column])
                    .where(tbl.c[column].is_not(None), ~tbl.c[column].startswith(f"{new_id}:"))
                    .limit(BATCH)
                ).all()
                if not rows:
                    break
                conn.execute(
                    update(tbl).where(tbl.c[key] == bindparam("pk")).values({column: bindparam("sealed")}),
                    [{"pk": pk, "sealed": cipher.encrypt(field, cipher.decrypt(field, env))} for pk, env in rows],
                )
                rewritten += len(rows)
    retired = []
    if retire:
        in_use = keys_in_use(store)
        retired = [kid for kid in keyring.encryption.keys if kid != new_id and kid not in in_use]
        for kid in retired:
            del keyring.encryption.keys[kid]
        keyring.save(path)
    with store.transaction() as conn:
        record_audit(conn, actor, "keys.rotate_encryption", [None], {"new_key": new_id, "retired": retired})
    return {"active": new_id, "re_encrypted": rewritten, "retired": retired}


def _remap_table(conn: Connection, table: str, column: str, only: str = "") -> int:
    return conn.execute(text(
        f"UPDATE {table} SET {column} = (SELECT new FROM _pseudonym_map WHERE old = {table}.{column}) "
        f"WHERE {column} IN (SELECT old FROM _pseudonym_map){only}"
    )).rowcount


def _newest_inactive_pseudonym_key(keyring: Keyring) -> str | None:
    """The newest pseudonym key when it is not the active one: a rotation saved it and stopped before
    activating it (keys are numbered in the order they were added)."""
    prefix = Keyring.PREFIXES["pseudonym"]
    numbered = [k for k in keyring.pseudonym.keys if k[len(prefix):].isdigit()]
    newest = max(numbered, key=lambda k: int(k[len(prefix):]), default=None)
    return newest if newest is not None and newest != keyring.pseudonym.active else None


def interrupted_pseudonym_rotation(store: SqlStore, keyring: Keyring) -> str | None:
    """The key of a pseudonym rotation that rewrote the database and stopped before activating its key,
    or None. In that state the tables hold the new pseudonyms while the active key computes the old
    ones: an erasure or export by raw id finds nothing, and a new event's vault row under the old key
    makes the rotation impossible to finish (Shop.open refuses to start until it is finished). Reads
    the vault only when the key file holds such a key: at once in that state, a scan when the rotation
    stopped before its transaction (no pseudonym of that key; nothing to finish, a rerun reuses it)."""
    pending = _newest_inactive_pseudonym_key(keyring)
    if pending is None:
        return None
    vault = schema.identity_vault
    with store.transaction() as conn:
        hit = conn.execute(select(vault.c.pseudonym).where(vault.c.pseudonym_key_id == pending).limit(1)).first()
    return pending if hit is not None else None


def rotate_pseudonym_key(store: SqlStore, keyring: Keyring, key_file: Path | None, actor: str,
                         remappers: Iterable[Callable[[dict[str, str]], None]] = ()) -> dict:
    path = _require_file(key_file)
    vault = schema.identity_vault
    with store.transaction() as conn:
        key_ids = {kid for (kid,) in conn.execute(select(vault.c.pseudonym_key_id).distinct())}
    pending = next((k for k in key_ids if k != keyring.pseudonym.active and k in keyring.pseudonym.keys), None)
    if pending is not None and key_ids != {pending}:
        raise ConfigError("the identity vault holds pseudonyms of both the active key and the newer key "
                          f"{pending}: data was written while a rotation was unfinished, and the two cannot "
                          "be merged automatically; restore the database from before the rotation")
    stranded: int | None = None
    if pending is not None:
        # An earlier run committed the remap but stopped before activating the key, perhaps before or
        # while remapping the derived stores: rebuild its mapping (the old key is still the active one)
        # so they are remapped now. Remapping is idempotent, so stores done before the crash are safe.
        new_id = pending
        cipher = FieldCipher(keyring.encryption)
        previous = Pseudonymizer(keyring.pseudonym, keyring.token, key_id=keyring.pseudonym.active)
        with store.transaction() as conn:
            mapping: dict[str, str] = {
                previous.user(cipher.decrypt(VAULT_FIELD, enc)): new
                for new, enc in conn.execute(select(vault.c.pseudonym, vault.c.raw_id_enc))
            }
    else:
        # A key saved by a run that stopped before its transaction committed made no pseudonym: reused,
        # rather than a new unused key per interrupted attempt
        new_id = _newest_inactive_pseudonym_key(keyring)
        if new_id is None:
            old_active = keyring.pseudonym.active
            new_id = keyring.pseudonym.add(Keyring.PREFIXES["pseudonym"])
            keyring.pseudonym.active = old_active
            keyring.save(path)
        cipher = FieldCipher(keyring.encryption)
        fresh = Pseudonymizer(keyring.pseudonym, keyring.token, key_id=new_id)
        with store.transaction() as conn:
            mapping = {
                old: fresh.user(cipher.decrypt(VAULT_FIELD, enc))
                for old, enc in conn.execute(select(vault.c.pseudonym, vault.c.raw_id_enc))
            }
            conn.execute(text("CREATE TEMP TABLE _pseudonym_map (old VARCHAR(32) PRIMARY KEY, new VARCHAR(32))"))
            if mapping:
                conn.execute(text("INSERT INTO _pseudonym_map (old, new) VALUES (:old, :new)"),
                             [{"old": o, "new": n} for o, n in mapping.items()])
            stranded = _without_raw_id(conn)
            for table, column in {**schema.SUBJECT_TABLES, **schema.ACCOUNTABILITY_TABLES}.items():
                _remap_table(conn, table, column)
            # risk lists of kind "user" hold pseudonyms as their tokens (other kinds hold token-key hashes)
            _remap_table(conn, "risk_list_entries", "token", only=" AND kind = 'user'")
            conn.execute(update(vault).values(pseudonym_key_id=new_id))
            conn.execute(text("DROP TABLE _pseudonym_map"))
            record_audit(conn, actor, "keys.rotate_pseudonym", [None], {"new_key": new_id, "users": len(mapping),
                                                                        "without_raw_id": stranded})
    for remap in remappers:
        remap(mapping)
    keyring.pseudonym.active = new_id
    keyring.save(path)
    result: dict = {"active": new_id, "users_remapped": len(mapping)}
    if stranded is not None:  # not known on a rerun: the first run remapped what it could
        result["pseudonyms_without_raw_id"] = stranded
    return result


def _without_raw_id(conn: Connection) -> int:
    """Pseudonyms that rows are about but the vault cannot map: written before every writer vaulted the
    raw id (privacy/vault.py). Their rows keep the old pseudonym, which an erasure by raw id no longer
    computes; the count is reported so that a shop can erase or re-vault them (docs/privacy.md)."""
    parts = [f"SELECT {column} AS p FROM {table} WHERE {column} IS NOT NULL"
             for table, column in schema.SUBJECT_TABLES.items() if table != "identity_vault"]
    parts.append("SELECT token AS p FROM risk_list_entries WHERE kind = 'user'")
    return int(conn.execute(text(
        f"SELECT COUNT(*) FROM ({' UNION '.join(parts)}) AS held "
        "WHERE p NOT IN (SELECT pseudonym FROM identity_vault)")).scalar())
