"""API keys with scopes. Keys are shown once at creation and stored only as SHA-256 hashes.

A key looks like `sm_<key id>_<secret>`: the id finds the row, the secret is compared by hash in
constant time. Plain SHA-256 (not a slow password hash) is right here because the secret is 256 random
bits, not a human password: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import insert, select, update

from shopmind.exceptions import AuthError, InvalidInputError, ScopeError
from shopmind.storage import schema
from shopmind.storage.sql import SqlStore


class Scope(str, Enum):
    admin = "admin"          # everything, including erasure, export, keys and rotation
    ingest = "ingest"        # write items, users, events, orders, payments
    recommend = "recommend"  # read recommendations and model outputs
    analyst = "analyst"      # read aggregates, metrics, dashboards, a user's recent events
    risk = "risk"            # ask for risk decisions (the checkout and login backends)
    risk_admin = "risk_admin"  # rules, lists, thresholds, cases, labels, account freezes


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key id (safe to log and audit) and its scopes."""

    key_id: str
    name: str
    scopes: frozenset[Scope]

    def require(self, scope: Scope) -> None:
        if Scope.admin not in self.scopes and scope not in self.scopes:
            raise ScopeError(f"this API key lacks the '{scope.value}' scope")

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[Scope]:
    try:
        return frozenset(Scope(s.strip()) for s in text.split(",") if s.strip())
    except ValueError:
        known = ", ".join(s.value for s in Scope)
        raise InvalidInputError(f"scopes must be a comma-separated list of: {known}; got {text!r}", field="scopes") from None


def create_key(store: SqlStore, name: str, scopes: frozenset[Scope]) -> str:
    """Create a key and return it in full. It cannot be shown again."""
    if not scopes:
        raise InvalidInputError("a key needs at least one scope", field="scopes")
    if not 1 <= len(name) <= 200 or "\x00" in name:  # what the column and every backend hold
        raise InvalidInputError("a key's name must be 1 to 200 characters, without NUL", field="name")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with store.transaction() as conn:
        conn.execute(insert(schema.api_keys).values(
            key_id=key_id, name=name, key_hash=_hash(secret),
            scopes=",".join(sorted(s.value for s in scopes)), created_ms=int(time.time() * 1000), revoked=False))
    return f"sm_{key_id}_{secret}"


def revoke_key(store: SqlStore, key_id: str) -> bool:
    with store.transaction() as conn:
        return conn.execute(update(schema.api_keys).where(schema.api_keys.c.key_id == key_id)
                            .values(revoked=True)).rowcount > 0


def list_keys(store: SqlStore) -> list[dict]:
    k = schema.api_keys
    with store.transaction() as conn:
        rows = conn.execute(select(k.c.key_id, k.c.name, k.c.scopes, k.c.created_ms, k.c.revoked)).all()
    return [dict(r._mapping) for r in rows]


class KeyVerifier:
    """Checks presented keys. Verified keys are cached briefly so auth costs no query per request;
    revocation takes effect within `ttl_s`."""

    def __init__(self, store: SqlStore, ttl_s: float = 5.0):
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}

    def verify(self, presented: str | None) -> Principal:
        if not presented:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        cached = self._cache.get(presented)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != "sm":
            raise AuthError("malformed API key")
        key_id, secret = parts[1], parts[2]
        k = schema.api_keys
        with self.store.transaction() as conn:
            row = conn.execute(select(k).where(k.c.key_id == key_id)).first()
        if row is None or row.revoked or not hmac.compare_digest(row.key_hash, _hash(secret)):
            raise AuthError("unknown or revoked API key")
        principal = Principal(key_id=row.key_id, name=row.name, scopes=parse_scopes(row.scopes))
        self._cache[presented] = (time.monotonic() + self.ttl_s, principal)
        return principal
