"""Ingestion on both backends: idempotent, all-or-nothing, pseudonymised and encrypted."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from shopmind.exceptions import BatchValidationError
from shopmind.storage import schema
from tests.conftest import event


def _all_text(shop) -> str:
    """Every value of every table, as one string (to look for raw identifiers)."""
    parts = []
    with shop.store.transaction() as conn:
        for table in schema.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def test_resent_batch_is_not_duplicated(shop):
    batch = [event(i) for i in range(50)]
    first = shop.ingest("events", batch, actor="t")
    again = shop.ingest("events", batch, actor="t")
    assert (first.written, first.duplicates) == (50, 0)
    assert (again.written, again.duplicates) == (0, 50)
    assert shop.store.count("events") == 50


def test_overlapping_batches_write_only_new_events(shop):
    shop.ingest("events", [event(i) for i in range(0, 30)], actor="t")
    result = shop.ingest("events", [event(i) for i in range(20, 60)], actor="t")
    assert (result.written, result.duplicates) == (30, 10)
    assert shop.store.count("events") == 60


def test_one_bad_row_rejects_the_whole_batch(shop):
    batch = [event(i) for i in range(10)]
    batch[3]["type"] = "teleport"
    batch[7].pop("ts")
    with pytest.raises(BatchValidationError) as info:
        shop.ingest("events", batch, actor="t")
    bad = {(e.index, e.field) for e in info.value.errors}
    assert bad == {(3, "type"), (7, "ts")}
    assert shop.store.count("events") == 0
    assert shop.store.count("identity_vault") == 0


def test_raw_ids_and_personal_data_are_never_stored_in_plaintext(shop):
    shop.ingest("users", [{"user_id": "alice-raw-id", "email": "alice@example.org", "phone": "+49 151 9876543",
                           "address": "Rosenweg 7, 10115 Berlin", "consent_personalization": True}], actor="t")
    shop.ingest("events", [event(1, user="alice-raw-id")], actor="t")
    shop.ingest("orders", [{"order_id": "o1", "user_id": "alice-raw-id", "ts": "2026-01-05T10:00:00Z",
                            "amount": 12.5, "device_id": "device-abc", "payment_instrument": "card-4242"}], actor="t")
    dump = _all_text(shop)
    for secret in ("alice-raw-id", "alice@example.org", "9876543", "Rosenweg", "device-abc", "card-4242"):
        assert secret not in dump, secret
    pseudonym = shop.pseudonym("alice-raw-id")
    assert pseudonym in dump
    export = shop.export_user("alice-raw-id", actor="t")
    assert export["user_id"] == "alice-raw-id"
    assert export["profile"]["email"] == "alice@example.org"
    assert [e["event_id"] for e in export["events"]] == ["ev-1"]


def test_encrypted_fields_carry_their_key_id(shop):
    shop.ingest("users", [{"user_id": "bob", "email": "bob@example.org"}], actor="t")
    with shop.store.transaction() as conn:
        envelope = conn.execute(select(schema.users.c.email_enc)).scalar_one()
    assert envelope.startswith(f"{shop.keyring.encryption.active}:")


def test_events_of_an_erased_user_sent_late_are_dropped(shop):
    shop.ingest("events", [event(1, user="carol")], actor="t")
    shop.erase_user("carol", actor="t")
    late_retry = shop.ingest("events", [event(1, user="carol"), event(2, user="carol")], actor="t")
    assert late_retry.dropped_erased == 2 and late_retry.written == 0
    future = shop.ingest("events", [event(3, user="carol", ts="2099-01-01T00:00:00Z")], actor="t")
    assert future.written == 1  # a new relationship after erasure is allowed


def test_items_and_users_upsert(shop):
    shop.ingest("items", [{"item_id": "i1", "title": "Old", "price": 3}], actor="t")
    shop.ingest("items", [{"item_id": "i1", "title": "New", "price": 4, "attributes": '{"size": "M"}'}], actor="t")
    with shop.store.transaction() as conn:
        row = conn.execute(select(schema.items)).one()
    assert (row.title, row.price, row.attributes) == ("New", 4.0, '{"size": "M"}')
    with pytest.raises(BatchValidationError) as info:
        shop.ingest("items", [{"item_id": "i2", "title": "a"}, {"item_id": "i2", "title": "b"}], actor="t")
    assert info.value.errors[0].field == "item_id"


def test_sqlite_runs_in_wal_with_full_sync(tmp_path):
    from tests.conftest import make_shop

    shop = make_shop(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    with shop.store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1


def test_import_refreshes_cached_user_state(shop, tmp_path):
    import json as _json

    shop.ingest("events", [event(1, user="dora", kind="purchase", item="i1")], actor="t")
    pseudonym = shop.pseudonym("dora")
    assert [r[0] for r in shop.recent_items(pseudonym)] == ["i1"] and shop.purchased_items(pseudonym) == {"i1"}
    path = tmp_path / "events.jsonl"
    path.write_text(_json.dumps(event(2, user="dora", kind="purchase", item="i2")) + "\n")
    shop.import_file(path, "events", actor="t")
    assert [r[0] for r in shop.recent_items(pseudonym)] == ["i1", "i2"]
    assert shop.purchased_items(pseudonym) == {"i1", "i2"}


@pytest.mark.parametrize("default_consent", [False, True])
def test_a_profile_update_keeps_what_it_leaves_out(shop, monkeypatch, default_consent):
    """An update of the e-mail alone (a CRM sync) must not undo a withdrawal made with PUT /consent, drop a
    consent given, or erase the phone: a field left out keeps its stored value."""
    monkeypatch.setattr(shop, "settings", shop.settings.model_copy(update={"default_consent": default_consent}))
    user = "frank"
    shop.ingest("users", [{"user_id": user, "email": "frank@example.com", "phone": "+49 30 1234567",
                           "consent_personalization": not default_consent, "country": "DE"}], actor="t")
    if default_consent:
        shop.set_consent(user, {"personalization": False}, actor="t")  # the user withdraws
    before = shop.has_consent(shop.pseudonym(user), "personalization")
    shop.ingest("users", [{"user_id": user, "email": "frank.new@example.com"}], actor="crm")
    assert shop.has_consent(shop.pseudonym(user), "personalization") == before == (not default_consent)
    profile = shop.export_user(user, "t")["profile"]
    assert profile["email"] == "frank.new@example.com" and profile["phone"] == "+49 30 1234567"
    assert profile["country"] == "DE"
    # a flag that is sent still changes it
    shop.ingest("users", [{"user_id": user, "consent_personalization": default_consent}], actor="t")
    assert shop.has_consent(shop.pseudonym(user), "personalization") == default_consent
