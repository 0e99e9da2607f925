"""A NUL character is refused in every string field of every row, on every backend; a raw driver error
inside a transaction surfaces as StorageError, never as an uncaught psycopg/sqlite3 exception
(review of 2026-12-08)."""

from __future__ import annotations

import pytest

from shopmind.events.schemas import ItemIn
from shopmind.events.validation import validate_rows
from shopmind.exceptions import BatchValidationError, StorageError
from tests.conftest import make_shop

TS = "2026-01-05T10:00:00Z"
BASE = {
    "items": {"item_id": "i1", "title": "Mug"},
    "users": {"user_id": "u1"},
    "events": {"event_id": "e1", "user_id": "u1", "type": "search", "query": "mug", "ts": TS},
    "orders": {"order_id": "o1", "user_id": "u1", "ts": TS, "amount": 1.0},
    "payments": {"payment_id": "p1", "ts": TS, "amount": 1.0},
}
OTHER_ID = {"items": {"item_id": "i2"}, "users": {"user_id": "u2"}}
NUL = "a\u0000b"
CASES = [
    ("items", {"item_id": NUL}, "item_id"),
    ("items", {"title": NUL}, "title"),
    ("items", {"description": NUL}, "description"),
    ("items", {"category": NUL}, "category"),
    ("items", {"brand": NUL}, "brand"),
    ("items", {"attributes": {"colour": NUL}}, "attributes"),
    ("items", {"attributes": {"sizes": ["S", NUL]}}, "attributes"),
    ("items", {"attributes": {NUL: "x"}}, "attributes"),
    ("users", {"user_id": NUL}, "user_id"),
    ("users", {"email": "a\u0000@example.org"}, "email"),
    ("users", {"address": "Rosen\u0000weg 1"}, "address"),
    ("users", {"age_band": NUL}, "age_band"),
    ("events", {"event_id": NUL}, "event_id"),
    ("events", {"user_id": NUL}, "user_id"),
    ("events", {"session_id": NUL}, "session_id"),
    ("events", {"query": "sec\u0000ret"}, "query"),
    ("events", {"item_id": NUL}, "item_id"),
    ("events", {"device": NUL}, "device"),
    ("events", {"ad_id": NUL}, "ad_id"),
    ("events", {"campaign_id": NUL}, "campaign_id"),
    ("orders", {"order_id": NUL}, "order_id"),
    ("orders", {"user_id": NUL}, "user_id"),
    ("orders", {"items": [{"item_id": NUL}]}, "items.0.item_id"),
    ("orders", {"device_id": NUL}, "device_id"),
    ("orders", {"payment_instrument": NUL}, "payment_instrument"),
    ("orders", {"fraud_pattern": NUL}, "fraud_pattern"),
    ("payments", {"payment_id": NUL}, "payment_id"),
    ("payments", {"order_id": NUL}, "order_id"),
    ("payments", {"method": NUL}, "method"),
    ("payments", {"status": NUL}, "status"),
]


@pytest.mark.parametrize("kind, change, field", CASES)
def test_a_nul_character_is_refused_naming_the_field(kind, change, field):
    good = BASE[kind]
    other = {**good, **OTHER_ID.get(kind, {})}  # items and users: one id twice in a batch is an error
    validate_rows(kind, [good, other], max_rows=10)  # the rows are valid without the NUL
    with pytest.raises(BatchValidationError) as caught:
        validate_rows(kind, [good, {**other, **change}], max_rows=10)
    errors = [(e.index, e.field) for e in caught.value.errors]
    assert errors == [(1, field)], caught.value.errors
    message = caught.value.errors[0].message
    assert "NUL" in message and "\u0000" not in message and "sec" not in message


def test_the_nul_check_leaves_other_text_alone():
    row = {"item_id": "i1", "title": "Tasse \u00e9\u4e2d \U0001f600", "attributes": {"a": ["\t", {"b": "c"}], "n": 1}}
    assert validate_rows("items", [row], max_rows=1)[0].title == "Tasse \u00e9\u4e2d \U0001f600"


def test_a_driver_error_in_a_transaction_is_a_storage_error(shop):
    """Errors raised by the driver itself (not through SQLAlchemy) are wrapped too, and roll back."""
    with pytest.raises(StorageError, match="nothing was written"):
        with shop.store.transaction() as conn:
            shop.store.insert_ignore(conn, "items", [{"item_id": "i1", "title": "Mug", "description": "",
                                                      "category": "", "brand": "", "currency": "EUR",
                                                      "consumable": False, "attributes": "{}", "updated_ms": 1}])
            conn.connection.driver_connection.execute("SELECT no_such_column FROM items")
    assert shop.store.count("items") == 0


def test_a_nul_that_bypasses_validation_is_a_storage_error_not_a_driver_error(tmp_path, postgres_url):
    """On PostgreSQL (SQLite stores NUL characters) a NUL reaching the driver (a model built without
    validation) is wrapped as well."""
    shop = make_shop(tmp_path / "home", postgres_url)
    row = ItemIn.model_construct(item_id="i1", title="a\u0000b", description="", category="", brand="", price=None,
                                 currency="EUR", stock=None, consumable=False, attributes={})
    try:
        with pytest.raises(StorageError):
            shop.ingestor.ingest("items", [row], actor="test")
        assert shop.store.count("items") == 0
    finally:
        shop.close()
