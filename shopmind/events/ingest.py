"""Ingestion: validated rows -> pseudonyms and ciphertext -> one durable transaction.

The privacy gate runs here, before storage sees anything: raw user and session ids become keyed
pseudonyms, device ids and payment instruments become keyed tokens, personal data is encrypted per
field, and each raw user id is kept once, encrypted, in the identity vault. Event, order and payment ids
make writes idempotent: a resent batch inserts nothing twice. Events of an erased user that predate
their erasure (late retries) are dropped, so erasure cannot be undone by a client's retry.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Connection

from shopmind.config import PURPOSES
from shopmind.events.schemas import EventIn, ItemIn, OrderIn, PaymentIn, UserIn
from shopmind.privacy.audit import record_audit
from shopmind.privacy.crypto import FieldCipher
from shopmind.privacy.erasure import erased_in_transaction
from shopmind.privacy.pseudonym import Pseudonymizer
from shopmind.privacy.vault import store_in_vault
from shopmind.storage.sql import SqlStore

PII_FIELDS = ("email", "phone", "address")


def now_ms() -> int:
    return int(time.time() * 1000)


def _ms(ts) -> int:
    return int(ts.timestamp() * 1000)


@dataclass
class IngestResult:
    kind: str
    received: int
    written: int
    duplicates: int
    dropped_erased: int = 0
    # ids of the events dropped as an erased user's late retries: the caller must not cache them either
    dropped_ids: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "received": self.received, "written": self.written,
                "duplicates": self.duplicates, "dropped_erased": self.dropped_erased}


class Ingestor:
    """Writes validated batches. One instance per process; thread-safe (no mutable state)."""

    def __init__(self, store: SqlStore, pseudonyms: Pseudonymizer, cipher: FieldCipher):
        self.store = store
        self.pseudonyms = pseudonyms
        self.cipher = cipher

    # -- entry point -------------------------------------------------------------------------------

    def ingest(self, kind: str, rows: Sequence[Any], actor: str) -> IngestResult:
        """Write one validated batch in its own transaction, committed before this returns."""
        with self.store.transaction() as conn:
            return self.write(conn, kind, rows, actor)

    def write(self, conn: Connection, kind: str, rows: Sequence[Any], actor: str) -> IngestResult:
        """Write a validated batch inside the caller's transaction (file import spans one per file)."""
        handler = {"events": self._events, "items": self._items, "users": self._users,
                   "orders": self._orders, "payments": self._payments}[kind]
        return handler(conn, rows, actor)

    # -- per kind ----------------------------------------------------------------------------------

    def _pseudonyms(self, raw_ids: set[str]) -> dict[str, str]:
        return {raw: self.pseudonyms.user(raw) for raw in raw_ids}

    def _vault(self, conn: Connection, raw_ids: set[str]) -> dict[str, str]:
        """Pseudonyms for raw user ids; new ones are stored encrypted in the identity vault."""
        mapping = self._pseudonyms(raw_ids)
        self._store_in_vault(conn, mapping)
        return mapping

    def _store_in_vault(self, conn: Connection, mapping: dict[str, str]) -> None:
        store_in_vault(self.store, conn, self.cipher, self.pseudonyms.key_id, mapping)

    def _vault_kept(self, conn: Connection, mapping: dict[str, str], rows: list[dict[str, Any]]) -> None:
        """Vault the raw ids of the users who have a row left to write. A late retry of an erased
        user's rows is dropped whole, and must not bring their raw id back into the vault either."""
        kept = {row["user_pseudonym"] for row in rows}
        self._store_in_vault(conn, {raw: p for raw, p in mapping.items() if p in kept})

    def _erased_before(self, conn: Connection, pseudonyms: set[str]) -> dict[str, int]:
        """Pseudonyms in this batch that were erased, with the time of their (latest) erasure. No erasure
        can begin between this read and the batch's commit (SqlStore.hold_erasures)."""
        return erased_in_transaction(self.store, conn, pseudonyms)

    def _events(self, conn: Connection, rows: Sequence[EventIn], actor: str) -> IngestResult:
        users = self._pseudonyms({e.user_id for e in rows if e.user_id is not None})
        sessions = {s: self.pseudonyms.session(s) for s in {e.session_id for e in rows if e.session_id}}
        erased = self._erased_before(conn, set(users.values()))
        ingested = now_ms()
        out, dropped, dropped_ids = [], 0, set()
        for e in rows:
            user = users.get(e.user_id) if e.user_id is not None else None
            ts = _ms(e.ts)
            if user is not None and user in erased and ts <= erased[user]:
                dropped += 1
                dropped_ids.add(e.event_id)
                continue
            out.append({
                "event_id": e.event_id, "user_pseudonym": user,
                "session_pseudonym": sessions.get(e.session_id) if e.session_id else None,
                "type": e.type.value, "item_id": e.item_id, "query": e.query, "price": e.price,
                "quantity": e.quantity, "rating": e.rating, "device": e.device, "country": e.country,
                "ts_ms": ts, "ad_id": e.ad_id, "campaign_id": e.campaign_id, "ingested_ms": ingested,
            })
        self._vault_kept(conn, users, out)
        written = self.store.insert_ignore(conn, "events", out)
        return IngestResult("events", len(rows), written, len(out) - written, dropped, frozenset(dropped_ids))

    def _items(self, conn: Connection, rows: Sequence[ItemIn], actor: str) -> IngestResult:
        updated = now_ms()
        out = [{
            "item_id": i.item_id, "title": i.title, "description": i.description, "category": i.category,
            "brand": i.brand, "price": i.price, "currency": i.currency, "stock": i.stock, "consumable": i.consumable,
            "attributes": json.dumps(i.attributes, sort_keys=True), "updated_ms": updated,
        } for i in rows]
        written = self.store.upsert(conn, "items", out)
        return IngestResult("items", len(rows), written, 0)

    def _users(self, conn: Connection, rows: Sequence[UserIn], actor: str) -> IngestResult:
        mapping = self._vault(conn, {u.user_id for u in rows})
        stamp = now_ms()
        out = []
        for u in rows:
            row = {
                "pseudonym": mapping[u.user_id],
                "consent_personalization": u.consent_personalization,
                "consent_advertising": u.consent_advertising,
                "consent_analytics": u.consent_analytics,
                "country": u.country, "age_band": u.age_band,
                "signup_ms": _ms(u.signup_ts) if u.signup_ts else None,
                "attributes": json.dumps(u.attributes, sort_keys=True),
                "created_ms": stamp, "updated_ms": stamp,
            }
            for f in PII_FIELDS:
                row[f"{f}_enc"] = self.cipher.encrypt(f"users.{f}", getattr(u, f))
            out.append(row)
        # A field left out keeps what is stored: an update of the e-mail alone must not reset a consent
        # the user gave or withdrew (nor drop the phone). Personal data goes through erasure, not null.
        profile = ("consent_personalization", "consent_advertising", "consent_analytics", "country", "age_band",
                   "signup_ms", *(f"{f}_enc" for f in PII_FIELDS))
        written = self.store.upsert(conn, "users", out, keep=("created_ms",), fill=profile)
        record_audit(conn, actor, "user.write", [r["pseudonym"] for r in out], {"fields": "profile"})
        # Consent set with a profile is audited as consent, as `PUT .../consent` is: "user.write" alone did
        # not say that consent changed, nor to what (found by a review). One entry per user, grouped by
        # the flags sent.
        by_flags: dict[tuple[tuple[str, bool], ...], list[str]] = {}
        for u in rows:
            flags = tuple((p, flag) for p in PURPOSES if (flag := getattr(u, f"consent_{p}")) is not None)
            if flags:
                by_flags.setdefault(flags, []).append(mapping[u.user_id])
        for flags, subjects in by_flags.items():
            record_audit(conn, actor, "user.consent", subjects, {**dict(flags), "via": "profile"})
        return IngestResult("users", len(rows), written, 0)

    def _orders(self, conn: Connection, rows: Sequence[OrderIn], actor: str) -> IngestResult:
        users = self._pseudonyms({o.user_id for o in rows})
        erased = self._erased_before(conn, set(users.values()))
        stamp = now_ms()
        out, dropped = [], 0
        for o in rows:
            user, ts = users[o.user_id], _ms(o.ts)
            if user in erased and ts <= erased[user]:
                dropped += 1
                continue
            out.append({
                "order_id": o.order_id, "user_pseudonym": user, "ts_ms": ts, "amount": o.amount,
                "currency": o.currency, "items": json.dumps([i.model_dump() for i in o.items], sort_keys=True),
                "shipping_country": o.shipping_country, "ip_country": o.ip_country,
                "device_token": self.pseudonyms.token("device", o.device_id) if o.device_id else None,
                "instrument_token": self.pseudonyms.token("instrument", o.payment_instrument)
                if o.payment_instrument else None,
                "label_fraud": o.label_fraud, "fraud_pattern": o.fraud_pattern, "ingested_ms": stamp,
            })
        self._vault_kept(conn, users, out)
        written = self.store.insert_ignore(conn, "orders", out)
        return IngestResult("orders", len(rows), written, len(out) - written, dropped)

    def _payments(self, conn: Connection, rows: Sequence[PaymentIn], actor: str) -> IngestResult:
        users = self._pseudonyms({p.user_id for p in rows if p.user_id})
        erased = self._erased_before(conn, set(users.values()))
        stamp = now_ms()
        out, dropped = [], 0
        for p in rows:
            user, ts = users.get(p.user_id) if p.user_id else None, _ms(p.ts)
            if user is not None and user in erased and ts <= erased[user]:
                dropped += 1
                continue
            out.append({
                "payment_id": p.payment_id, "order_id": p.order_id, "user_pseudonym": user, "ts_ms": ts,
                "amount": p.amount, "currency": p.currency,
                "instrument_token": self.pseudonyms.token("instrument", p.payment_instrument)
                if p.payment_instrument else None,
                "method": p.method, "status": p.status, "label_fraud": p.label_fraud,
                "fraud_pattern": p.fraud_pattern, "ingested_ms": stamp,
            })
        self._vault_kept(conn, users, [r for r in out if r["user_pseudonym"] is not None])
        written = self.store.insert_ignore(conn, "payments", out)
        return IngestResult("payments", len(rows), written, len(out) - written, dropped)
