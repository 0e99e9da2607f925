"""Alerts: a jump in a rule's hit rate reaches a webhook, after retries while the webhook fails."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy import insert

from shopmind.exceptions import InvalidInputError
from shopmind.risk import alerts
from shopmind.storage import schema

NOW = 1_780_000_000_000
HOUR = 3_600_000


def _decision(i: int, decided_ms: int, fired: list[str]) -> dict:
    return {"decision_id": f"d{i}", "event_id": f"e{i}", "kind": "payment", "user_pseudonym": "ab" * 16,
            "ts_ms": decided_ms, "decided_ms": decided_ms, "decision": "allow", "score": 0.1, "model_score": None,
            "model_version": None, "rules_version": 1, "amount": 10.0,
            "rules": json.dumps({"fired": fired, "shadow": [], "failed": []}), "features": "{}", "latency_us": 100}


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_first = 2

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
        else:
            _Hook.received.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_rule_hit_rate_jump_is_alerted_once_and_delivered_after_retries(shop):
    _Hook.received, _Hook.fail_first = [], 2
    # baseline day: 1,000 decisions, the rule fired on 10 (1%); last hour: 100 decisions, fired on 20 (20%)
    rows = [_decision(i, NOW - 2 * HOUR - i * 60_000, ["card_burst"] if i % 100 == 0 else []) for i in range(1000)]
    rows += [_decision(5000 + i, NOW - i * 30_000, ["card_burst"] if i % 5 == 0 else []) for i in range(100)]
    rows += [_decision(9000 + i, NOW - i * 30_000, ["steady"] if i % 2 == 0 else []) for i in range(100)]
    rows += [_decision(9500 + i, NOW - 2 * HOUR - i * 60_000, ["steady"]) for i in range(1000)]
    for row in rows:
        shop.risk.log.submit(row)
    shop.risk.log.write(_decision(99999, NOW - 5 * 24 * HOUR, []))  # after the others: all committed

    raised = alerts.check(shop.store, now_ms=NOW)
    assert [(a["kind"], a.get("rule_id")) for a in raised] == [("rule_hit_rate", "card_burst")]
    assert raised[0]["hits"] == 20 and raised[0]["baseline_rate"] < 0.01
    assert alerts.check(shop.store, now_ms=NOW + 60_000) == []  # not again within the window

    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        policy = alerts.AlertPolicy(backoff_s=10)
        assert alerts.deliver(shop.store, [url], policy, now_ms=NOW) == {"delivered": 0, "failed": 1, "due": 1}
        # not due again before its backoff has passed
        assert alerts.deliver(shop.store, [url], policy, now_ms=NOW + 5_000)["due"] == 0
        assert alerts.deliver(shop.store, [url], policy, now_ms=NOW + 10_000)["failed"] == 1
        assert alerts.deliver(shop.store, [url], policy, now_ms=NOW + 30_000) == {"delivered": 1, "failed": 0, "due": 1}
        assert alerts.deliver(shop.store, [url], policy, now_ms=NOW + 90_000)["due"] == 0
    finally:
        server.shutdown()
    assert len(_Hook.received) == 1 and _Hook.received[0]["rule_id"] == "card_burst"
    assert not any(key in json.dumps(_Hook.received[0]) for key in ("pseudonym", "abab"))


@pytest.mark.parametrize("recent, recent_every, expected", [(100, 4, ["fraud_rate"]), (1000, 50, [])])
def test_a_fraud_rate_jump_is_alerted_and_a_steady_rate_is_not(shop, recent, recent_every, expected):
    """A quarter of the last hour's labels fraudulent against a base of 2%: an alert. The same 2% in the
    last hour, 20 frauds (past the minimum of 10 hits): none (a check that raised on every fraud passed
    when only the jump was tested)."""
    labels = [{"event_id": f"b{i}", "user_pseudonym": None, "fraud": i % 50 == 0, "source": "chargeback",
               "labelled_ms": NOW - 2 * HOUR - i * 60_000, "actor": "t"} for i in range(1000)]
    labels += [{"event_id": f"w{i}", "user_pseudonym": None, "fraud": i % recent_every == 0, "source": "chargeback",
                "labelled_ms": NOW - i * (3_000_000 // recent), "actor": "t"} for i in range(recent)]
    with shop.store.transaction() as conn:
        conn.execute(insert(schema.risk_labels), labels)
    raised = alerts.check(shop.store, now_ms=NOW)
    assert [a["kind"] for a in raised] == expected
    if expected:
        assert raised[0]["fraud"] == 25


def test_workers_checking_and_delivering_at_once_raise_and_send_one_alert(shop, monkeypatch):
    import time

    rows = [_decision(i, NOW - 2 * HOUR - i * 60_000, []) for i in range(200)]
    rows += [_decision(5000 + i, NOW - i * 30_000, ["card_burst"] if i % 5 == 0 else []) for i in range(100)]
    with shop.store.transaction() as conn:
        conn.execute(insert(schema.risk_decisions), rows)
    # two workers that both read the outbox before either wrote to it
    monkeypatch.setattr(alerts, "_recently_raised", lambda store, since_ms: set())
    assert len(alerts.check(shop.store, now_ms=NOW)) == 1
    assert alerts.check(shop.store, now_ms=NOW + 1_000) == []
    assert shop.store.count("risk_alerts") == 1

    class SlowHook(_Hook):
        def do_POST(self):  # noqa: N802
            time.sleep(0.3)  # both workers are inside deliver() while the first posts
            super().do_POST()

    _Hook.received, _Hook.fail_first = [], 0
    server = HTTPServer(("127.0.0.1", 0), SlowHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    results = []
    try:
        workers = [threading.Thread(target=lambda: results.append(alerts.deliver(shop.store, [url], now_ms=NOW)))
                   for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        server.shutdown()
    assert len(_Hook.received) == 1 and sum(r["delivered"] for r in results) == 1


def test_a_slow_webhook_does_not_let_another_worker_send_an_alert_again(shop, monkeypatch):
    """Claims were made for the run's start + 60 s: 14 alerts at 5 s per post, and the 13th was claimed
    already expired, so a second worker's loop claimed and posted it too."""
    with shop.store.transaction() as conn:
        conn.execute(insert(schema.risk_alerts), [
            {"created_ms": NOW, "payload": json.dumps({"kind": "rule_hit_rate", "rule_id": f"r{i}"}), "attempts": 0,
             "next_ms": NOW, "delivered_ms": None, "last_error": None, "dedup_key": f"k{i}", "delivered_to": None}
            for i in range(14)])
    clock = {"ms": NOW}
    monkeypatch.setattr(alerts.time, "time", lambda: clock["ms"] / 1000)
    posts: list[tuple[str, str]] = []

    class Client:
        def __init__(self, name: str, latency_ms: int):
            self.name, self.latency_ms, self.other_ran = name, latency_ms, False

        def post(self, url, content, headers):
            posts.append((self.name, json.loads(content)["rule_id"]))
            clock["ms"] += self.latency_ms
            if self.name == "A" and clock["ms"] >= NOW + 62_000 and not self.other_ran:
                self.other_ran = True  # the other worker's loop comes round while this one still posts
                alerts.deliver(shop.store, ["https://hooks.example/risk"], client=Client("B", 10))
            return type("Response", (), {"status_code": 204})()

    alerts.deliver(shop.store, ["https://hooks.example/risk"], client=Client("A", 5_000))
    rules = [rule for _, rule in posts]
    assert sorted(rules) == sorted(f"r{i}" for i in range(14)) and len(rules) == len(set(rules)), posts


def test_a_retry_goes_only_to_the_webhook_that_failed(shop):
    rows = [_decision(i, NOW - i * 30_000, ["card_burst"]) for i in range(20)]
    for row in rows:
        shop.risk.log.submit(row)
    shop.risk.log.write(_decision(99999, NOW - 5 * 24 * HOUR, []))
    assert len(alerts.check(shop.store, now_ms=NOW)) == 1

    class Client:  # the team's chat hook works; the pager hook is down for the first try
        def __init__(self):
            self.posts: list[str] = []
            self.pager_down = True

        def post(self, url, content, headers):
            self.posts.append(url)
            down = url.endswith("/pager") and self.pager_down
            return type("Response", (), {"status_code": 503 if down else 204})()

    client = Client()
    hooks = ["https://chat.example/hook?token=s3cret", "https://ops.example/pager"]
    policy = alerts.AlertPolicy(backoff_s=1)
    assert alerts.deliver(shop.store, hooks, policy, now_ms=NOW, client=client)["failed"] == 1
    client.pager_down = False
    assert alerts.deliver(shop.store, hooks, policy, now_ms=NOW + 5_000, client=client)["delivered"] == 1
    assert client.posts == [hooks[0], hooks[1], hooks[1]]  # the chat hook saw the alert once
    with shop.store.transaction() as conn:
        stored = conn.execute(schema.risk_alerts.select()).one()
    assert "s3cret" not in str(stored._mapping)  # hook URLs (and their tokens) are not kept in the outbox


@pytest.mark.parametrize("setting, field", [
    ({"min_hits": 0}, "min_hits"), ({"min_hits": -1}, "min_hits"), ({"ratio": 0.0}, "ratio"),
    ({"ratio": -2.0}, "ratio"), ({"ratio": float("nan")}, "ratio"), ({"window_ms": 0}, "window_ms"),
    ({"baseline_ms": 0}, "baseline_ms"),
])
def test_a_policy_that_cannot_be_checked_is_refused_naming_the_setting(shop, setting, field):
    with pytest.raises(InvalidInputError) as err:
        alerts.check(shop.store, alerts.AlertPolicy(**setting), now_ms=NOW)
    assert err.value.field == field


@pytest.mark.parametrize("option, value", [("--min-hits", "0"), ("--ratio", "0"), ("--ratio", "-1"),
                                           ("--window-minutes", "0"), ("--window-minutes", "-5")])
def test_the_alerts_command_refuses_settings_it_cannot_check_with_exit_2(tmp_path, monkeypatch, option, value):
    from typer.testing import CliRunner

    from shopmind.cli.main import app

    monkeypatch.setenv("SHOPMIND_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    result = runner.invoke(app, ["risk", "alerts", option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
