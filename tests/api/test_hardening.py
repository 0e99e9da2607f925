"""Inputs that used to crash, leak or get further than they should (each found by a review, 2026-12-06)."""

from __future__ import annotations

import copy
import logging

import pytest

from tests.conftest import auth, event


def test_the_key_is_checked_before_the_body_is_read(client, keys, shop):
    """Without a key, a body is neither parsed nor buffered: 401, not a JSON error, and a declared body
    over the limit is refused before it is read."""
    for path in ("/v1/events", "/v1/keys", "/v1/risk/decisions"):
        r = client.post(path, content=b"[", headers={"content-type": "application/json"})
        assert r.status_code == 401, (path, r.text)
        r = client.post(path, content=b"[", headers={**auth("sm_nope_nothing"), "content-type": "application/json"})
        assert r.status_code == 401, (path, r.text)
    from shopmind.api.fast_routes import MAX_REQUEST_BODY

    r = client.post("/v1/events", content=b"[]", headers={**auth(keys["ingest"]), "content-type": "application/json",
                                                         "content-length": str(MAX_REQUEST_BODY + 1)})
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert shop.store.count("events") == 0



def _chunks(rows: int):
    """A JSON array of events sent without a Content-Length (Transfer-Encoding: chunked)."""
    yield b"["
    for i in range(rows):
        yield (b'{"event_id":"e%d","user_id":"u","type":"view","item_id":"i","ts":"2026-01-01T00:00:00Z"}' % i
               + (b"," if i < rows - 1 else b""))
    yield b"]"


def test_a_chunked_body_over_the_limit_is_413_like_a_declared_one(client, keys, shop, monkeypatch):
    """Without a Content-Length the limit is found while reading: the answer is the same 413 naming `body`
    as for a declared length, not FastAPI's 400 "There was an error parsing the body" (review, 2026-12-08)."""
    import shopmind.api.fast_routes as fast_routes

    headers = {**auth(keys["ingest"]), "content-type": "application/json"}
    monkeypatch.setattr(fast_routes, "MAX_REQUEST_BODY", 1000)   # stands in for 64 MiB
    declared = client.post("/v1/events", content=b"[]", headers={**headers, "content-length": "1001"})
    for path in ("/v1/events", "/v1/risk/decisions", "/v1/keys"):
        r = client.post(path, content=_chunks(50), headers={**auth(keys["admin"]), "content-type": "application/json"})
        assert r.status_code == 413, (path, r.text)
        assert r.json() == declared.json() == {"detail": "request body is larger than 1000 bytes", "field": "body"}
    assert shop.store.count("events") == 0
    # under the limit, a chunked body is read and written as before
    r = client.post("/v1/events", content=_chunks(5), headers=headers)
    assert r.status_code == 200 and r.json()["written"] == 5, r.text


def test_a_body_that_is_not_json_is_named_as_such(client, keys):
    r = client.post("/v1/events", content=b'[{"event_id": ', headers={**auth(keys["ingest"]),
                                                                    "content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body" and r.json()["errors"][0]["index"] is None
    assert "row" not in r.json()["detail"]


@pytest.mark.parametrize("body, problem", [
    ("[" * 3000 + "]" * 3000, "nested too deeply"),                                     # past json's recursion
    ('[{"item_id": "i9", "title": "t", "stock": ' + "9" * 5000 + "}]", "4300 digits"),  # past int conversion
    ('{"item_id": "i9", "title": "t"}', "valid list"),                                   # not a list
])
def test_a_json_body_python_cannot_read_or_that_is_not_a_list_names_the_body(client, keys, shop, body, problem):
    """These were a bare 400 naming nothing (or, for an object, an error about field "row")."""
    r = client.post("/v1/items", content=body, headers={**auth(keys["ingest"]), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(None, "body")] and problem in r.text, r.text
    assert shop.store.count("items") == 0


@pytest.mark.parametrize("kind", ["items", "users"])
def test_attributes_nested_hundreds_of_levels_deep_are_422_not_500(client, keys, shop, kind):
    """Valid JSON, but the NUL check walked it by recursion: a RecursionError and a 500."""
    deep = '{"a": ' * 450 + "1" + "}" * 450
    row = ('{"item_id": "i1", "title": "t", "attributes": %s}' if kind == "items"
           else '{"user_id": "u1", "attributes": %s}') % deep
    r = client.post(f"/v1/{kind}", content=f"[{row}]", headers={**auth(keys["ingest"]), "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "attributes", r.text
    assert "levels deep" in r.text and shop.store.count(kind) == 0


@pytest.mark.parametrize("epsilon", [1e-9, 1e-12])
def test_an_epsilon_too_small_to_calibrate_is_422_naming_it(client, keys, epsilon):
    """OpenDP's search for a noise scale found none under its bound: a ValueError and a 500."""
    r = client.post("/v1/analytics/reports", json={"metric": "count", "epsilon": epsilon}, headers=auth(keys["analyst"]))
    assert r.status_code == 422 and r.json()["field"] == "epsilon", r.text


@pytest.mark.parametrize("path, scope", [("/v1/events", "ingest"), ("/v1/users", "ingest"),
                                         ("/v1/risk/decisions", "risk")])
def test_a_body_that_is_not_utf8_is_named_as_such_and_writes_nothing(client, keys, shop, path, scope):
    """FastAPI answered a bare 400 naming nothing for a JSON body with a byte that is not UTF-8."""
    row = b'{"event_id": "e\xff1", "user_id": "u\xff1", "type": "view", "item_id": "i1", "ts": "2026-01-05T10:00:00Z"}'
    body = row if path == "/v1/risk/decisions" else b"[" + row + b"]"  # the risk route takes one event
    r = client.post(path, content=body, headers={**auth(keys[scope]), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == "body" and ("UTF-8" in error["message"] or "unicode" in error["message"])
    assert shop.store.count("events") == shop.store.count("users") == 0
    # other HTTP errors keep FastAPI's answers
    assert client.get("/v1/no-such-route", headers=auth(keys[scope])).status_code == 404


@pytest.mark.parametrize("kind, row, field", [
    ("events", event(1, ts="9999-12-31T23:00:00-05:00"), "ts"),
    ("events", event(1, ts="1950-01-01T00:00:00Z"), "ts"),
    ("users", {"user_id": "u1", "signup_ts": "0001-01-01T00:00:00+01:00"}, "signup_ts"),
    ("items", {"item_id": "i1", "title": "A", "stock": 1e20}, "stock"),
    ("orders", {"order_id": "o1", "user_id": "u1", "ts": "2026-01-01T00:00:00Z", "amount": 1.0,
                "items": [{"item_id": "i1", "quantity": 20000}]}, "items"),
    ("orders", {"order_id": "o1", "user_id": "u1", "ts": "2026-01-01T00:00:00Z", "amount": 1.0,
                "items": [{"item_id": "i1", "price": "abc"}]}, "items"),
    ("orders", {"order_id": "o1", "user_id": "u1", "ts": "2200-01-01T00:00:00Z", "amount": 1.0}, "ts"),
])
def test_out_of_range_values_are_422_naming_the_field_and_write_nothing(client, keys, shop, kind, row, field):
    r = client.post(f"/v1/{kind}", json=[row], headers=auth(keys["ingest"]))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"].startswith(field)
    assert shop.store.count(kind) == 0


def test_stored_orders_replay_through_the_risk_engine(client, keys, shop):
    """Every order ingestion accepts is one the risk engine can replay (its item bounds are the engine's)."""
    from shopmind.risk.training import replay_history

    order = {"order_id": "o1", "user_id": "u1", "ts": "2026-01-01T00:00:00Z", "amount": 10.0,
             "items": [{"item_id": 17, "quantity": 10_000, "price": 9_999_999.0}]}
    assert client.post("/v1/orders", json=[order], headers=auth(keys["ingest"])).status_code == 200
    assert replay_history(shop)["replayed"] == 1


def test_a_session_time_past_2100_is_422(client, keys):
    r = client.post("/v1/sessions/recommendations", json={"events": [{"item_id": "i1", "ts_ms": 1e22}]},
                    headers=auth(keys["recommend"]))
    assert r.status_code == 422 and "ts_ms" in r.json()["errors"][0]["field"]


def _without_fast_routes(app):
    """The same app with the plain-ASGI paths taken out: the reference the fast path must agree with."""
    from fastapi.testclient import TestClient

    from shopmind.api.fast_routes import FastRoutes

    reference = copy.copy(app)
    reference.user_middleware = [m for m in app.user_middleware if m.cls is not FastRoutes]
    reference.middleware_stack = None
    return TestClient(reference)


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", b'{"event_id": "e1", "kind": "login", "user_id": "u1", "amount": 0}'),
    (None, b'{"event_id": "e2", "kind": "login", "user_id": "u1", "amount": 0}'),  # requests' data=
    ("application/x/+json", b'{"event_id": "e3", "kind": "login", "user_id": "u1", "amount": 0}'),
    ("application/json", b'\xef\xbb\xbf{"event_id": "e4", "kind": "login", "user_id": "u1", "amount": 0}'),
    ("application/json", b'[]'),
    ("application/json", b'{"event_id": "e5", "kind": "login", "user_id": "u1", "amount": true}'),
    ("application/json; charset=utf-8", b'{"event_id": "e6", "kind": "login", "user_id": "u1", "amount": 0}'),
])
def test_the_fast_risk_path_answers_as_the_route_does(client, keys, shop, content_type, body):
    """Status, body and what is written agree with the FastAPI route's, whatever the installed FastAPI
    does with the Content-Type: a fast path that decided a body the route refuses wrote a decision (and
    could open a case or freeze an account) for a request every other route answers with 422."""
    headers = {**auth(keys["risk"]), **({"content-type": content_type} if content_type else {})}
    reference = _without_fast_routes(client.app)
    r = client.post("/v1/risk/decisions", content=body, headers=headers)
    written = shop.store.count("risk_decisions")
    # another event id: the route must decide it afresh, not answer it as a retry
    expected = reference.post("/v1/risk/decisions", content=body.replace(b'": "e', b'": "r'), headers=headers)
    assert r.status_code == expected.status_code
    if r.status_code == 200:
        assert written == 1
    else:
        assert r.json() == expected.json() and written == 0
        assert shop.store.count("risk_decisions") == 0


def test_invented_http_methods_do_not_create_metric_series(client, keys):
    client.request("BREW", "/v1/events", headers=auth(keys["ingest"]))
    metrics = client.get("/metrics", headers=auth(keys["admin"])).text
    assert "BREW" not in metrics


def test_webhook_urls_are_not_logged_by_the_http_client(tmp_path):
    from shopmind.cli.main import _configure_logging
    from shopmind.config import load_settings

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        _configure_logging(load_settings(home=tmp_path / "home"))
        assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
                handler.close()


def test_the_served_shop_warms_states_at_start_and_after_a_behaviour_promotion(tmp_path, monkeypatch):
    """`shopmind serve` (an app that opens its own shop) starts the warm-up at startup and again when it
    loads a newly promoted behaviour version; tests' apps, handed a shop, do not."""
    import time

    from fastapi.testclient import TestClient

    from shopmind.api.main import create_app
    from shopmind.shop import Shop
    from tests.conftest import make_shop

    calls: list[str] = []
    monkeypatch.setattr(Shop, "warm_states", lambda self: calls.append("warm") or 0)
    home = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}")
    settings = home.settings
    home.close()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(calls) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    with TestClient(create_app(settings=settings)) as client:
        wait_for(1)
        assert calls == ["warm"]
        registry = client.app.state.shop.registry
        registry.on_switch("popularity", "v20260101-000000-1")
        registry.on_switch("behaviour", "v20260101-000000-1")
        wait_for(2)
        time.sleep(0.2)
        assert calls == ["warm", "warm"]  # the behaviour version only


def test_order_items_nested_hundreds_of_levels_deep_are_422_not_500(client, keys, shop):
    """`items` given as a JSON string (as a CSV column holds it) was parsed unguarded: deep nesting raised
    a RecursionError, a 500 over HTTP and a traceback from `shopmind import` (found by a review)."""
    row = {"order_id": "o1", "user_id": "u1", "ts": "2026-01-05T10:00:00Z", "amount": 5.0,
           "items": "[" * 5000 + "]" * 5000}
    r = client.post("/v1/orders", json=[row], headers=auth(keys["ingest"]))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "items", r.text
    assert shop.store.count("orders") == 0


def test_the_session_fallback_leaves_out_the_durables_the_visitor_just_bought(shop):
    """With no behaviour model to serve a session, trending answered it with the durable the visitor had
    just bought, which a known user's fallback leaves out (found by a review). Consumables stay."""
    shop.ingest("items", [{"item_id": f"sku-{n}", "title": f"Item {n}", "category": "Home", "consumable": n == 1}
                          for n in range(5)], actor="t")
    shop.ingest("users", [{"user_id": f"u{n}", "consent_personalization": True} for n in range(4)], actor="t")
    shop.ingest("events", [event(10 * u + n, user=f"u{u}", kind="purchase", item=f"sku-{n}")
                           for u in range(4) for n in range(5 - u)], actor="t")
    assert "skipped" in shop.train(actor="t")["behaviour"]  # too little history: trending serves
    bought = [{"item_id": "sku-0", "type": "purchase"}, {"item_id": "sku-1", "type": "purchase"}]
    answer = shop.recommend_session(bought, k=5)
    served = [i["item_id"] for i in answer["items"]]
    assert answer["model"].startswith("popularity/") and "sku-0" not in served and "sku-1" in served


def test_the_api_docs_load_nothing_from_outside_the_server(client, tmp_path):
    """FastAPI's /docs page loads Swagger UI and a favicon from public CDNs: blank on an offline host, and
    each visit tells a third party (found by a user review). Served by the server itself now."""
    import re

    from fastapi.testclient import TestClient

    from shopmind.api.main import create_app
    from shopmind.config import load_settings

    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert not re.search(r"https?://", page.text), re.findall(r"https?://[^\"' ]+", page.text)
    for name, media in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        r = client.get(f"/docs/{name}")
        assert r.status_code == 200 and media in r.headers["content-type"] and len(r.content) > 10_000
    closed = TestClient(create_app(settings=load_settings(home=tmp_path / "closed", docs_public=False)))
    assert all(closed.get(p).status_code == 404 for p in ("/docs", "/docs/swagger-ui.css", "/openapi.json"))


# Found by an HTTP fuzzing and dashboard review, 2026-12-07 (night).

def test_a_large_body_is_not_read_for_a_key_without_its_routes_scope(client, keys, shop):
    """FastAPI reads and parses a body before any dependency checks the scope, and a large one held the
    event loop for seconds: a recommend key's 57 MiB POST /v1/items stalled every request for 3 s before
    its 403. A large body now meets the scope check first; a body that is not even JSON proves it was not
    parsed (the route answers that with 422 before its dependencies run)."""
    from shopmind.api.fast_routes import EARLY_SCOPE_CHECK

    junk = b"[" + b"0," * EARLY_SCOPE_CHECK  # not JSON: cut off
    for path, wrong, right in (("/v1/items", "recommend", "ingest"), ("/v1/risk/lists/blocked", "risk", "risk_admin"),
                               ("/v1/analytics/reports", "ingest", "analyst")):
        r = client.post(path, content=junk, headers={**auth(keys[wrong]), "content-type": "application/json"})
        assert r.status_code == 403 and f"'{right}' scope" in r.json()["detail"], (path, r.status_code, r.text)
        r = client.post(path, content=junk, headers={**auth(keys[right]), "content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)  # the right key reaches the route, which parses it
        r = client.post(path, content=junk, headers={**auth(keys["admin"]), "content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)  # admin carries every scope
    r = client.post("/v1/items", content=b"[", headers={**auth(keys["recommend"]), "content-type": "application/json"})
    assert r.status_code == 422  # a small body goes on as before: the route parses, then checks
    assert shop.store.count("items") == 0


def test_the_scope_table_covers_every_api_route(client):
    """Every route under /v1/ needs a scope in the table the early check reads (a route the table missed
    would read any key's large body)."""
    table = client.app.state.route_scopes
    api = [route for route, _ in table if route.path.startswith("/v1/")]
    assert len(api) >= 30
    assert all(needed for route, needed in table if route.path.startswith("/v1/"))


@pytest.mark.parametrize("attributes, problem", [
    ({"tags": list(range(2_000))}, "more than 1,000"),
    ({f"k{i}": i for i in range(600)}, "more than 1,000"),
    ({"text": "x" * 70_000}, "characters of text"),
])
def test_attributes_are_bounded_before_anything_walks_them(client, keys, shop, attributes, problem):
    """A row whose attributes held a list of thirty million numbers kept the event loop busy for 26 s
    (the NUL check and validation walked every element) while every other request waited."""
    r = client.post("/v1/items", json=[{"item_id": "i1", "title": "Mug", "attributes": attributes}],
                    headers=auth(keys["ingest"]))
    assert r.status_code == 422 and problem in r.text, r.text
    assert r.json()["errors"][0]["field"] == "attributes"
    assert shop.store.count("items") == 0


def test_nan_and_infinity_in_attributes_are_refused(client, keys, shop):
    """Python's JSON parser reads NaN and Infinity; they were stored and came back from an export as null."""
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'[{"user_id": "u1", "attributes": {"score": ' + literal + b'}}]'
        r = client.post("/v1/users", content=body, headers={**auth(keys["ingest"]), "content-type": "application/json"})
        assert r.status_code == 422 and "NaN or Infinity" in r.text, (literal, r.text)
    assert shop.store.count("users") == 0


def test_a_nul_in_a_rule_or_a_freeze_reason_is_422_on_every_backend(client, keys, shop):
    """PostgreSQL cannot store a NUL: a rule's description or expression holding one was stored on SQLite
    and answered 503 on PostgreSQL."""
    admin = auth(keys["risk_admin"])
    good = {"expression": "event.amount > 100.0", "action": "review", "mode": "shadow"}
    for body, field in (({**good, "description": "a\u0000b"}, "description"),
                        ({**good, "expression": 'event.email_domain == "a\u0000b"'}, "expression")):
        r = client.put("/v1/risk/rules/big", json=body, headers=admin)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert client.get("/v1/risk/rules", headers=admin).json() == []
    r = client.post("/v1/risk/accounts/u1/freeze", json={"reason": "x\u0000y"}, headers=admin)
    assert r.status_code == 422 and r.json()["field"] == "reason", r.text
    assert shop.store.count("risk_accounts") == 0


def test_a_path_that_is_not_utf8_is_422_not_another_users_id(client, keys, shop):
    """The server decodes paths with replacement: m%FCller and m%E4ller both became m\ufffdller, so consent,
    export and erasure of one acted on the other."""
    admin = auth(keys["admin"])
    assert client.put("/v1/users/m%C3%BCller/consent", json={"personalization": True}, headers=admin).status_code == 200
    assert client.put("/v1/users/m%EF%BF%BDller/consent", json={"personalization": True},
                      headers=admin).status_code == 200  # U+FFFD itself, sent as UTF-8, is an id like any other
    users = shop.store.count("users")
    for method, path in (("PUT", "/v1/users/m%FCller/consent"), ("DELETE", "/v1/users/m%F6ller"),
                         ("GET", "/v1/users/m%E4ller/export"), ("GET", "/v1/users/m%FCller/recommendations")):
        headers = auth(keys["recommend"]) if path.endswith("recommendations") else admin
        r = client.request(method, path, json={"personalization": False} if method == "PUT" else None, headers=headers)
        assert r.status_code == 422 and r.json()["field"] == "path", (method, path, r.text)
    assert shop.store.count("users") == users
    assert client.get("/v1/users/m%EF%BF%BDller/export", headers=admin).json()["profile"]["consent"]["personalization"] is True


def test_the_dashboard_runs_only_its_own_script_and_cannot_be_framed(client):
    import base64
    import hashlib
    import re

    r = client.get("/dashboard")
    csp = r.headers["content-security-policy"]
    script = re.search(r"<script>(.*?)</script>", r.text, flags=re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "script-src 'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"


def test_a_key_request_with_an_unknown_field_is_refused(client, keys, shop):
    """`{"expires_in_days": 1}` was dropped and the key created: the caller believed it would expire."""
    before = shop.store.count("api_keys")
    r = client.post("/v1/keys", json={"name": "temp", "scopes": ["ingest"], "expires_in_days": 1},
                    headers=auth(keys["admin"]))
    assert r.status_code == 422 and "expires_in_days" in r.text
    assert shop.store.count("api_keys") == before
