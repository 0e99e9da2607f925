"""Every HTTP route needs a key with the right scope; a wrong scope gets 403, no key 401."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from shopmind.api.main import create_app
from shopmind.config import load_settings
from tests.conftest import auth

# The scope each route needs (None: any valid key). A new route must be added here, or the test fails.
ROUTE_SCOPES = {
    ("POST", "/v1/events"): "ingest",
    ("POST", "/v1/items"): "ingest",
    ("POST", "/v1/users"): "ingest",
    ("POST", "/v1/orders"): "ingest",
    ("POST", "/v1/payments"): "ingest",
    ("GET", "/v1/users/{user_id}/recommendations"): "recommend",
    ("POST", "/v1/sessions/recommendations"): "recommend",
    ("GET", "/v1/items/{item_id}/similar"): "recommend",
    ("DELETE", "/v1/users/{user_id}"): "admin",
    ("GET", "/v1/users/{user_id}/export"): "admin",
    ("PUT", "/v1/users/{user_id}/consent"): "admin",
    ("GET", "/v1/users/{user_id}/events"): "analyst",
    ("GET", "/metrics"): "analyst",
    ("GET", "/v1/stats"): "analyst",
    ("GET", "/v1/models/{name}"): "analyst",
    ("POST", "/v1/analytics/reports"): "analyst",
    ("GET", "/v1/analytics/budget"): "analyst",
    ("POST", "/v1/keys"): "admin",
    ("POST", "/v1/risk/decisions"): "risk",
    ("GET", "/v1/risk/decisions/{decision_id}"): "risk_admin",
    ("GET", "/v1/risk/rules"): "risk_admin",
    ("PUT", "/v1/risk/rules/{rule_id}"): "risk_admin",
    ("DELETE", "/v1/risk/rules/{rule_id}"): "risk_admin",
    ("GET", "/v1/risk/rules/{rule_id}/history"): "risk_admin",
    ("GET", "/v1/risk/lists"): "risk_admin",
    ("POST", "/v1/risk/lists/{list_name}"): "risk_admin",
    ("POST", "/v1/risk/lists/{list_name}/remove"): "risk_admin",
    ("GET", "/v1/risk/thresholds"): "risk_admin",
    ("PUT", "/v1/risk/thresholds"): "risk_admin",
    ("DELETE", "/v1/risk/thresholds/{kind}"): "risk_admin",
    ("GET", "/v1/risk/cases"): "risk_admin",
    ("POST", "/v1/risk/cases/{case_id}/verdict"): "risk_admin",
    ("POST", "/v1/risk/labels"): "risk_admin",
    ("POST", "/v1/risk/accounts/{user_id}/freeze"): "risk_admin",
    ("POST", "/v1/risk/accounts/{user_id}/unfreeze"): "risk_admin",
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
}
# Static pages that hold no data: the dashboard shell and the redirect to it.
PUBLIC = {("GET", "/"), ("GET", "/dashboard")}


def _flatten(routes):
    for route in routes:
        nested = getattr(route, "original_router", None)  # FastAPI >= 0.16x wraps included routers
        if nested is not None:
            yield from _flatten(nested.routes)
        elif isinstance(route, APIRoute):
            yield route


def _routes():
    app = create_app(settings=load_settings())
    for route in _flatten(app.routes):
        for method in route.methods:
            yield method, route.path


def test_every_route_is_listed_with_its_scope():
    found = {r for r in _routes()} - PUBLIC
    assert found == set(ROUTE_SCOPES), f"unlisted: {found - set(ROUTE_SCOPES)}, stale: {set(ROUTE_SCOPES) - found}"


def _call(client, method: str, path: str, headers: dict):
    url = path.replace("{user_id}", "someone").replace("{kind}", "popularity").replace("{item_id}", "i1")
    body = [] if method in {"POST"} and "keys" not in path else None
    if path == "/v1/sessions/recommendations":
        body = {"events": []}
    if path == "/v1/keys":
        body = {"name": "x", "scopes": ["ingest"]}
    if path.endswith("/consent"):
        body = {"personalization": True}
    return client.request(method, url, headers=headers, json=body)


@pytest.mark.parametrize("route", sorted(ROUTE_SCOPES))
def test_missing_and_wrong_keys_are_refused(client, keys, route):
    method, path = route
    assert _call(client, method, path, {}).status_code == 401
    assert _call(client, method, path, auth("sm_nope_nope")).status_code == 401
    needed = ROUTE_SCOPES[route]
    for scope, key in keys.items():
        status = _call(client, method, path, auth(key)).status_code
        allowed = needed is None or scope in {needed, "admin"}
        if allowed:
            assert status not in (401, 403), (scope, route, status)
        else:
            assert status == 403, (scope, route, status)


def test_x_api_key_header_works_and_revoked_keys_fail(client, keys, shop):
    from shopmind.auth import revoke_key

    assert client.get("/v1/stats", headers={"X-API-Key": keys["analyst"]}).status_code == 200
    key_id = keys["analyst"].split("_")[1]
    revoke_key(shop.store, key_id)
    client.app.state.keys._cache.clear()
    assert client.get("/v1/stats", headers={"X-API-Key": keys["analyst"]}).status_code == 401


def test_keys_are_stored_hashed(shop, keys):
    from sqlalchemy import select

    from shopmind.storage import schema

    with shop.store.transaction() as conn:
        stored = " ".join(" ".join(map(str, r)) for r in conn.execute(select(schema.api_keys)))
    for key in keys.values():
        assert key.split("_", 2)[2] not in stored
