"""What a decision request is refused for: event times ahead of the server's clock, and bodies that are
not JSON (the fast decision route answers as the FastAPI routes do)."""

from __future__ import annotations

import asyncio
import time

import pytest

from shopmind.exceptions import InvalidInputError
from shopmind.risk.schemas import RiskEvent
from shopmind.risk.service import MAX_AHEAD_MS
from tests.conftest import auth

YEAR_2096_MS = 4_000_000_000_000


def _now() -> int:
    return int(time.time() * 1000)


def _payment(event_id: str, ts_ms: int) -> RiskEvent:
    return RiskEvent(event_id=event_id, kind="payment", ts_ms=ts_ms, card="stolen", amount=500.0)


def test_an_event_from_the_future_is_refused_and_leaves_the_windows_alone(shop):
    """One far-future time would move the card's windows ahead, so that every real event after it looked
    a month old and fell out of them: the card's velocity would stay at 1 whatever it did."""
    with pytest.raises(InvalidInputError) as err:
        shop.risk.decide(_payment("ahead", YEAR_2096_MS))
    assert err.value.field == "ts_ms"
    with pytest.raises(InvalidInputError) as err:
        asyncio.run(shop.risk.decide_async(_payment("ahead-async", _now() + MAX_AHEAD_MS + 60_000)))
    assert err.value.field == "ts_ms"
    assert shop.store.count("risk_decisions") == 0
    now = _now()
    counts = [shop.risk.decision(shop.risk.decide(_payment(f"p{i}", now + i)).decision_id)["features"]["card_count_1h"]
              for i in range(5)]
    assert counts == sorted(counts) and counts[-1] - counts[0] == 4


def test_a_client_clock_a_little_ahead_is_accepted(shop):
    """Clocks drift: an event a minute ahead of the server is decided, as are times in the past (replays)."""
    shop.risk.decide(_payment("drift", _now() + 60_000))
    asyncio.run(shop.risk.decide_async(_payment("drift-async", _now() + 60_000)))
    shop.risk.decide(_payment("old", 1_780_000_000_000))
    assert shop.store.count("risk_decisions") == 3


def test_the_decision_route_refuses_a_future_time_naming_ts_ms(shop, client, keys):
    body = {"event_id": "o-ahead", "kind": "order", "ts_ms": YEAR_2096_MS, "amount": 10.0}
    r = client.post("/v1/risk/decisions", json=body, headers=auth(keys["risk"]))
    assert r.status_code == 422 and r.json()["field"] == "ts_ms"
    assert shop.store.count("risk_decisions") == 0


@pytest.mark.parametrize("raw", [b"{not json", b'{"event_id": "e1", "kind": "order",'])
def test_the_decision_route_names_the_body_for_invalid_json(client, keys, raw):
    """As the FastAPI routes answer (api/errors.py): field "body", the parser's message after "invalid JSON"."""
    headers = {**auth(keys["risk"]), "Content-Type": "application/json"}
    r = client.post("/v1/risk/decisions", content=raw, headers=headers)
    reference = client.put("/v1/risk/thresholds", content=raw, headers={**auth(keys["risk_admin"]),
                                                                         "Content-Type": "application/json"})
    assert r.status_code == reference.status_code == 422
    (error,), (expected,) = r.json()["errors"], reference.json()["errors"]
    assert error["field"] == expected["field"] == "body" and error["index"] is None
    assert error["message"].startswith("invalid JSON: ") and expected["message"].startswith("invalid JSON: ")


def test_a_rule_put_with_the_schema_defaults_is_refused_only_for_its_missing_weight(client, keys, shop):
    """The contract published in /openapi.json must describe requests that can succeed: a score rule's
    weight is required (it had a default of 0, which every score rule is refused for)."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]["RuleIn"]["properties"]["weight"]
    assert schema.get("default") is None
    r = client.put("/v1/risk/rules/big_order", json={"expression": "event.amount > 1.0"}, headers=auth(keys["risk_admin"]))
    assert r.status_code == 422 and r.json()["field"] == "weight" and "needs a weight" in r.json()["detail"]
    assert shop.store.count("risk_rules") == 0
    r = client.put("/v1/risk/rules/big_order", json={"expression": "event.amount > 1.0", "action": "review"},
                   headers=auth(keys["risk_admin"]))
    assert r.status_code == 200 and r.json()["action"] == "review"
    r = client.put("/v1/risk/rules/big_order", json={"expression": "event.amount > 1.0", "weight": 0.2},
                   headers=auth(keys["risk_admin"]))
    assert r.status_code == 200 and r.json()["weight"] == 0.2


def test_a_time_in_seconds_and_a_label_that_is_not_a_boolean_are_refused(client, keys, shop):
    """ts_ms 1.7e9 (seconds) reads as January 1970 in milliseconds and was decided; `"fraud": "yes"` was
    stored as a fraud label, which trains the model (found by a risk docs review)."""
    from tests.conftest import auth

    r = client.post("/v1/risk/decisions", json={"event_id": "o-s", "kind": "order", "ts_ms": 1_765_000_000,
                                                "amount": 10.0}, headers=auth(keys["risk"]))
    assert r.status_code == 422 and "seconds" in r.text, r.text
    assert shop.store.count("risk_decisions") == 0
    decided = client.post("/v1/risk/decisions", json={"event_id": "o-1", "kind": "order", "amount": 10.0},
                          headers=auth(keys["risk"]))
    assert decided.status_code == 200, decided.text
    for value in ("yes", 1, "true"):
        r = client.post("/v1/risk/labels", json=[{"event_id": "o-1", "fraud": value}], headers=auth(keys["risk_admin"]))
        assert r.status_code == 422, (value, r.text)
    assert shop.store.count("risk_labels") == 0
