"""HTTP ingestion: whole-batch validation with per-row errors, idempotency, limits, metrics."""

from __future__ import annotations

from tests.conftest import auth, event


def test_post_events_then_resend(client, keys, shop):
    batch = [event(i, user=f"u{i % 7}") for i in range(200)]
    r = client.post("/v1/events", json=batch, headers=auth(keys["ingest"]))
    assert r.status_code == 200, r.text
    assert r.json() == {"kind": "events", "received": 200, "written": 200, "duplicates": 0, "dropped_erased": 0}
    r = client.post("/v1/events", json=batch, headers=auth(keys["ingest"]))
    assert r.json()["written"] == 0 and r.json()["duplicates"] == 200
    assert shop.store.count("events") == 200


def test_bad_rows_are_listed_and_nothing_is_written(client, keys, shop):
    batch = [event(i) for i in range(5)]
    batch[1]["price"] = -3
    batch[4]["type"] = "add_to_cart"
    batch[4].pop("item_id")
    r = client.post("/v1/events", json=batch, headers=auth(keys["ingest"]))
    assert r.status_code == 422
    errors = {(e["index"], e["field"]) for e in r.json()["errors"]}
    assert errors == {(1, "price"), (4, "item_id")}
    assert "2 invalid row(s)" in r.json()["detail"]
    assert shop.store.count("events") == 0


def test_unknown_fields_are_errors_not_silently_dropped(client, keys):
    row = event(1)
    row["colour"] = "red"
    r = client.post("/v1/events", json=[row], headers=auth(keys["ingest"]))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "colour"


def test_batch_limit(client, keys, shop):
    shop.settings.max_batch = 10
    r = client.post("/v1/events", json=[event(i) for i in range(11)], headers=auth(keys["ingest"]))
    assert r.status_code == 422 and r.json()["field"] == "body"
    assert shop.store.count("events") == 0


def test_error_bodies_do_not_echo_personal_data(client, keys):
    r = client.post("/v1/users", json=[{"user_id": "secret-user", "email": "not-an-email secret@x"}],
                    headers=auth(keys["ingest"]))
    assert r.status_code == 422
    assert "secret" not in r.text


def test_metrics_use_route_templates_not_raw_ids(client, keys):
    client.get("/v1/users/raw-user-77/events", headers=auth(keys["analyst"]))
    client.post("/v1/events", json=[event(1)], headers=auth(keys["ingest"]))
    body = client.get("/metrics", headers=auth(keys["analyst"])).text
    assert 'route="/v1/users/{user_id}/events"' in body
    assert "raw-user-77" not in body
    assert 'shopmind_rows_ingested_total{kind="events"} 1.0' in body
    # no behaviour model here, so nothing to refresh: the background refresh's counts are exported at 0
    assert 'shopmind_state_refresh_users_total{outcome="submitted"} 0.0' in body
    assert "shopmind_state_refresh_pending 0.0" in body


def test_health_and_readiness(client, keys):
    assert client.get("/healthz", headers=auth(keys["recommend"])).json()["status"] == "ok"
    ready = client.get("/readyz", headers=auth(keys["recommend"])).json()
    assert ready["status"] == "ready" and ready["checks"]["database"] is True


def test_dashboard_page_is_served_without_data(client):
    r = client.get("/dashboard")
    assert r.status_code == 200 and "shopmind" in r.text and "/v1/stats" in r.text


def test_a_nul_character_is_422_naming_the_field_on_every_backend(client, keys, shop):
    """PostgreSQL cannot store NUL in text: it was a 500 there and stored on SQLite (review, 2026-12-08)."""
    cases = [
        ("items", [{"item_id": "ok1", "title": "fine"}, {"item_id": "i2", "title": "a\u0000b"}], 1, "title"),
        ("events", [event(1), {**event(2, kind="search", item=None), "query": "sec\u0000ret"}], 1, "query"),
        ("users", [{"user_id": "secret-raw-user", "address": "Rosen\u0000weg"}], 0, "address"),
        ("orders", [{"order_id": "o1", "user_id": "u1", "ts": "2026-01-01T00:00:00Z", "amount": 1.0,
                     "items": [{"item_id": "i\u00001"}]}], 0, "items.0.item_id"),
    ]
    for kind, rows, index, field in cases:
        r = client.post(f"/v1/{kind}", json=rows, headers=auth(keys["ingest"]))
        assert r.status_code == 422, (kind, r.text)
        assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(index, field)], r.text
        assert "secret" not in r.text and "Rosen" not in r.text
    for table in ("items", "events", "users", "orders", "identity_vault"):
        assert shop.store.count(table) == 0, table


def test_true_or_false_in_a_numeric_field_is_422_naming_it(client, keys, shop):
    """Pydantic's lax mode read JSON true/false as 1/0: a price of 1, a quantity of 1 were stored."""
    cases = [
        ("events", [{**event(1, kind="purchase"), "price": True}], "price"),
        ("events", [{**event(2, kind="purchase"), "quantity": False}], "quantity"),
        ("orders", [{"order_id": "o1", "user_id": "u1", "ts": "2026-01-01T00:00:00Z", "amount": True}], "amount"),
        ("items", [{"item_id": "i1", "title": "t", "stock": True}], "stock"),
    ]
    for kind, rows, field in cases:
        r = client.post(f"/v1/{kind}", json=rows, headers=auth(keys["ingest"]))
        assert r.status_code == 422, (kind, r.text)
        assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(0, field)], r.text
        assert "not true or false" in r.text
    for table in ("items", "events", "orders"):
        assert shop.store.count(table) == 0, table


def test_the_same_id_twice_in_one_batch_is_422_and_writes_nothing(client, keys, shop):
    """The HTTP path holds a batch to the same rule as a file import: an id given twice is ambiguous."""
    audited = shop.store.count("audit_log")
    r = client.post("/v1/items", json=[{"item_id": "dup", "title": "A"}, {"item_id": "ok", "title": "C"},
                                       {"item_id": "dup", "title": "B"}], headers=auth(keys["ingest"]))
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(2, "item_id")]
    assert "duplicate of row 0" in r.json()["errors"][0]["message"]
    r = client.post("/v1/users", json=[{"user_id": "dupu", "email": "a@x"}, {"user_id": "dupu", "email": "b@x"}],
                    headers=auth(keys["ingest"]))
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(1, "user_id")]
    assert "dupu" not in r.text
    for table in ("items", "users", "identity_vault"):
        assert shop.store.count(table) == 0, table
    assert shop.store.count("audit_log") == audited
    # the same id in separate batches is an update, as before
    for title in ("A", "B"):
        assert client.post("/v1/items", json=[{"item_id": "dup", "title": title}],
                           headers=auth(keys["ingest"])).status_code == 200
    assert shop.store.count("items") == 1
