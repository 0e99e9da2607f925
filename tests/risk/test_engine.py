"""The risk engine end to end: rules, decisions, cases, audits, freezes, durability, training without leakage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert, select

from shopmind.exceptions import InvalidInputError
from shopmind.privacy.audit import audit_entries
from shopmind.risk.features import logged_vector
from shopmind.risk.rules import Rule, compile_rule
from shopmind.risk.schemas import RiskEvent
from shopmind.risk.training import DAY_MS, training_set
from shopmind.storage import schema
from tests.conftest import auth

NOW = 1_780_000_000_000


def order(i: int, **extra) -> dict:
    body = {"event_id": f"o-{i}", "kind": "order", "ts_ms": NOW + i * 1000, "user_id": "alice", "amount": 80.0,
            "card": "card-4242", "device_id": "dev-1", "ip": "10.0.0.1", "ip_country": "DE",
            "shipping_country": "DE", "email": "alice@example.com"}
    body.update(extra)
    return body


@pytest.mark.parametrize("expression, problem", [
    ('__import__("os").system("true")', "unknown function(s) __import__, system"),
    ("open('/etc/passwd') != ''", "unknown function(s) open"),
    ("secret_key == 'x'", "unknown variable(s) secret_key"),
    ("event.amount >", "does not parse"),
    ("event.amount > 'a lot'", "fails on a typical event"),
    ("event.amount", "true or false"),
    ("false && event.no_such_field > 1", "unknown field of event"),
    ("lists.never_created", "unknown list"),
    ("card.count_2h > 3", "unknown field of card"),
    # a variable put in a map, a list, parentheses or a condition is selected from where no check sees it
    ('event.amount > 1.0 && {"a": event}.a.nope > 1', "uses event other than as event.<field>"),
    ("event.amount > 1.0 && [event][0].nope > 1", "uses event other than as event.<field>"),
    ("false && (true ? card : user).nope > 1", "uses card other than as card.<field>"),
    ('false && event["no" + "pe"] > 1', "indexes event with something other than a quoted name"),
    ("false && event // a comment\n.nope > 1", "unknown field of event 'nope'"),
    ("false && event.kind.nope > 1", "selects from event.kind"),
    # a field's value is a single value however it is reached: parenthesised, indexed, or through a macro
    ("event.amount > 100.0 && (event.kind).nope == 1", "selects 'nope' from a value without fields"),
    ("event.amount > 100.0 && [event.kind][0].nope == 1", "selects 'nope' from a value without fields"),
    ("event.amount > 100.0 && (true ? event.kind : '').nope == 1", "selects 'nope' from a value without fields"),
    ("event.amount > 100.0 && [event.amount].exists(x, x.nope > 1)", "selects 'nope' from a value without fields"),
])
def test_rule_language_rejects_unsafe_or_malformed_rules(shop, expression, problem):
    with pytest.raises(InvalidInputError) as err:
        shop.risk.put_rule(Rule("r1", expression, "review"), actor="t")
    assert err.value.field == "expression" and problem in str(err.value)
    assert shop.risk.rules(include_inactive=True) == []  # nothing was written


@pytest.mark.parametrize("expression", [
    "event . amount > 1.0", "event // why\n.amount > 1.0", 'event["amount"] > 1.0', 'lists["stolen"]',
    '"stolen" in lists', "size(event) > 0", 'event.email_domain.endsWith(".ru")',
    "'event.nope' == event.kind || event.amount > 1.0", 'r"\\" == event.kind || event.amount > 1.0',
    "[1, 2].exists(x, x > 1) && card.count_1h >= 3", "(event.kind).startsWith('o')",
    "[event.ip_country, event.shipping_country].exists(c, c == 'KP')",
])
def test_rule_language_accepts_fields_named_where_they_are_used(expression):
    compile_rule(Rule("r1", expression, "review"), ("stolen",))


def test_bad_rule_over_http_is_422_naming_the_field_and_changes_nothing(client, keys):
    r = client.put("/v1/risk/rules/r1", json={"expression": "event.amount >", "action": "block"},
                   headers=auth(keys["risk_admin"]))
    assert r.status_code == 422 and "expression" in r.text
    assert client.get("/v1/risk/rules", headers=auth(keys["risk_admin"])).json() == []


def test_block_list_rule_blocks_with_reasons_and_the_decision_is_logged(client, keys, shop):
    admin = auth(keys["risk_admin"])
    assert client.post("/v1/risk/lists/stolen_cards", json={"kind": "card", "values": ["card-6666"]},
                       headers=admin).json() == {"list_name": "stolen_cards", "added": 1}
    r = client.put("/v1/risk/rules/stolen_card", json={"expression": "lists.stolen_cards", "action": "block",
                                                       "mode": "enforce", "description": "card on the stolen list"},
                   headers=admin)
    assert r.status_code == 200, r.text
    good = client.post("/v1/risk/decisions", json=order(1), headers=auth(keys["risk"])).json()
    bad = client.post("/v1/risk/decisions", json=order(2, card="card-6666"), headers=auth(keys["risk"])).json()
    assert good["decision"] == "allow" and good["rules"] == []
    assert bad["decision"] == "block" and [h["rule_id"] for h in bad["rules"]] == ["stolen_card"]
    assert "rule stolen_card: card on the stolen list" in bad["reasons"]
    logged = client.get(f"/v1/risk/decisions/{bad['decision_id']}", headers=admin).json()
    assert logged["decision"] == "block" and logged["rules"]["fired"] == ["stolen_card"]
    assert logged["features"]["card_count_1h"] == 1 and logged["features"]["user_count_1h"] == 2
    no_model = client.get(f"/v1/risk/decisions/{bad['decision_id']}?exact=true", headers=admin)
    assert no_model.status_code == 404 and "without a model" in no_model.text
    text = json.dumps(logged)
    for raw in ("alice", "card-6666", "dev-1", "10.0.0.1", "example.com"):
        assert raw not in text  # only keyed pseudonyms are stored
    # the same event id twice is counted once in the windows
    again = client.post("/v1/risk/decisions", json=order(2, card="card-6666"), headers=auth(keys["risk"])).json()
    assert client.get(f"/v1/risk/decisions/{again['decision_id']}", headers=admin).json()["features"][
        "user_count_1h"] == 2
    # a card blocked by mistake comes off the list (audited), and the next decision allows it
    removed = client.post("/v1/risk/lists/stolen_cards/remove", json={"kind": "card", "values": ["card-6666", "card-0"]},
                          headers=admin)
    assert removed.json() == {"list_name": "stolen_cards", "removed": 1}
    assert client.post("/v1/risk/lists/stolen_cards/remove", json={"kind": "card", "values": []},
                       headers=admin).status_code == 422
    after = client.post("/v1/risk/decisions", json=order(3, card="card-6666"), headers=auth(keys["risk"])).json()
    assert after["decision"] == "allow" and after["rules"] == []
    with shop.store.transaction() as conn:
        actions = [a for (a,) in conn.execute(select(schema.audit_log.c.action).where(
            schema.audit_log.c.action.like("risk.list.%")).order_by(schema.audit_log.c.id))]
    assert actions == ["risk.list.add", "risk.list.remove"]


def test_bad_event_is_422_naming_the_field_and_logs_nothing(client, keys, shop):
    r = client.post("/v1/risk/decisions", json=order(1, amount=-5), headers=auth(keys["risk"]))
    assert r.status_code == 422 and "amount" in r.text
    # a NUL in a stored text field: PostgreSQL cannot store it, so it is refused on every backend
    for bad, field, problem in ((order(2, event_id="o-\u0000"), "event_id", "NUL"),
                                (order(3, items=[{"item_id": "i\u0000"}]), "item_id", "NUL"),
                                # JSON true/false would pass as 1/0: an event at 1 ms after 1970, an amount of 1
                                (order(4, ts_ms=True), "ts_ms", "not true or false"),
                                (order(5, amount=False), "amount", "not true or false"),
                                (order(6, items=[{"item_id": "i1", "quantity": True}]), "quantity", "not true or false")):
        r = client.post("/v1/risk/decisions", json=bad, headers=auth(keys["risk"]))
        assert r.status_code == 422 and field in r.text and problem in r.text, r.text
    assert shop.store.count("risk_decisions") == 0


def test_shadow_rules_are_logged_but_not_enforced(shop):
    shop.risk.put_rule(Rule("big", "event.amount > 50.0", "block", mode="shadow"), actor="t")
    out = shop.risk.decide(RiskEvent(**order(1)))
    assert out.decision == "allow" and [h.rule_id for h in out.shadow_rules] == ["big"]
    assert shop.risk.decision(out.decision_id)["rules"]["shadow"] == ["big"]


@pytest.mark.parametrize("expression", [
    "event.amount > 50.0 // don't let big orders through\n && event.kind == 'order'",
    'event.amount > 50.0 && "it\'s" != event.kind && event.kind == "order"',
    "event.kind != 'a//b' && event.amount > 50.0 && event.kind == 'order'",
    "['a'].exists(x, x == 'a') && event.amount > 50.0 // it's\n && event.kind == 'order'",
])
def test_an_enforced_rule_reads_every_field_it_names_whatever_its_comments_and_strings_hold(shop, expression):
    """The fields handed to the evaluator are read from the same tokens the validation walks: an
    apostrophe in a // comment once opened a 'string' that hid event.kind, and the rule failed on every
    event (a block rule that looked enforced stopped nothing)."""
    shop.risk.put_rule(Rule("big_order", expression, "block", mode="enforce"), actor="t")
    out = shop.risk.decide(RiskEvent(**order(1)))
    assert out.failed_rules == [] and out.decision == "block"


def test_score_rules_add_up_against_thresholds(shop):
    shop.risk.set_thresholds(0.3, 0.6, actor="t")
    shop.risk.put_rule(Rule("far", "event.ip_country != event.shipping_country", "score", weight=0.35,
                            mode="enforce"), actor="t")
    shop.risk.put_rule(Rule("pricey", "event.amount >= 500.0", "score", weight=0.35, mode="enforce"), actor="t")
    assert shop.risk.decide(RiskEvent(**order(1, ip_country="NG"))).decision == "review"
    assert shop.risk.decide(RiskEvent(**order(2, ip_country="NG", amount=900.0))).decision == "block"
    assert shop.risk.decide(RiskEvent(**order(3))).decision == "allow"


def test_review_opens_a_case_and_the_verdict_becomes_an_audited_label(client, keys, shop):
    admin = auth(keys["risk_admin"])
    shop.risk.put_rule(Rule("new_card_big", "event.new_card && event.amount > 60.0", "review", mode="enforce"), "t")
    decision = client.post("/v1/risk/decisions", json=order(1), headers=auth(keys["risk"])).json()
    assert decision["decision"] == "review" and decision["case_id"]
    open_cases = client.get("/v1/risk/cases", headers=admin).json()
    assert [c["case_id"] for c in open_cases] == [decision["case_id"]]
    r = client.post(f"/v1/risk/cases/{decision['case_id']}/verdict", json={"verdict": "fraud"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "fraud"
    again = client.post(f"/v1/risk/cases/{decision['case_id']}/verdict", json={"verdict": "legitimate"}, headers=admin)
    assert again.status_code == 422  # resolved once
    with shop.store.transaction() as conn:
        label = conn.execute(select(schema.risk_labels)).one()
        entries = audit_entries(conn)
    assert label.event_id == "o-1" and label.fraud is True and label.source == "analyst"
    assert any(e["action"] == "risk.case.resolve" for e in entries)


def test_a_rule_change_is_audited_from_what_to_what(shop):
    shop.risk.put_rule(Rule("big", "event.amount > 500.0", "review", mode="shadow"), actor="cli:alice")
    shop.risk.put_rule(Rule("big", "event.amount > 300.0", "review", mode="enforce"), actor="cli:bob")
    with shop.store.transaction() as conn:
        changes = [e for e in audit_entries(conn) if e["action"] == "risk.rule.put"]
    newest = json.loads(changes[0]["detail"])
    assert changes[0]["actor"] == "cli:bob"
    assert newest["before"]["expression"] == "event.amount > 500.0" and newest["before"]["mode"] == "shadow"
    assert newest["after"]["expression"] == "event.amount > 300.0" and newest["after"]["version"] == 2
    assert [r["version"] for r in shop.risk.rule_history("big")] == [1, 2]
    shop.risk.set_thresholds(0.4, 0.8, actor="cli:carol")
    with shop.store.transaction() as conn:
        change = next(e for e in audit_entries(conn) if e["action"] == "risk.thresholds.set")
    assert json.loads(change["detail"])["before"]["review"] == 0.5 and json.loads(change["detail"])["after"]["review"] == 0.4


def test_freeze_and_unfreeze_are_audited_and_enforced(shop):
    shop.risk.freeze("alice", actor="cli:dana", reason="ato suspected")
    assert shop.risk.decide(RiskEvent(**order(1))).decision == "freeze_account"
    shop.risk.unfreeze("alice", actor="cli:dana")
    assert shop.risk.decide(RiskEvent(**order(2))).decision == "allow"
    with shop.store.transaction() as conn:
        actions = [e["action"] for e in audit_entries(conn, subject=shop.pseudonym("alice"))]
    assert actions[:2] == ["risk.account.unfreeze", "risk.account.freeze"]


def test_a_freeze_rule_freezes_the_account_for_later_events(shop):
    shop.risk.put_rule(Rule("takeover", "event.kind == 'login' && event.ip_country == 'KP'", "freeze_account",
                            mode="enforce"), actor="t")
    assert shop.risk.decide(RiskEvent(**order(1, kind="login", amount=0.0, ip_country="KP"))).decision == "freeze_account"
    assert shop.risk.decide(RiskEvent(**order(2))).decision == "freeze_account"  # frozen now


def test_a_rule_freezing_an_account_another_process_froze_audits_what_the_table_held(shop):
    """The audit entry said before: false whatever the table held: this process's memory of frozen
    accounts is up to a reload behind another worker's (or an analyst's CLI) freeze."""
    shop.risk.put_rule(Rule("takeover", "event.kind == 'login' && event.ip_country == 'KP'", "freeze_account",
                            mode="enforce"), actor="t")
    shop.risk.decide(RiskEvent(**order(1, amount=5.0)))  # the engine is built: its frozen set read
    with shop.store.transaction() as conn:  # another process freezes alice
        conn.execute(insert(schema.risk_accounts).values(pseudonym=shop.pseudonym("alice"), frozen=True,
                                                         updated_ms=NOW, actor="key:other"))
    assert shop.risk.decide(RiskEvent(**order(2, kind="login", amount=0.0, ip_country="KP"))).decision == "freeze_account"
    with shop.store.transaction() as conn:
        entry = next(e for e in audit_entries(conn, subject=shop.pseudonym("alice")) if e["action"] == "risk.account.freeze")
    assert json.loads(entry["detail"])["before"] is True


def test_erasure_reaches_decisions_cases_labels_and_velocity(shop):
    shop.risk.put_rule(Rule("all", "event.amount > 1.0", "review", mode="enforce"), actor="t")
    out = shop.risk.decide(RiskEvent(**order(1)))
    shop.risk.resolve_case(out.case_id, "fraud", actor="t")
    receipt = shop.erase_user("alice", actor="t")
    assert receipt.removed.get("velocity_entries", 0) >= 1
    for table in ("risk_decisions", "risk_cases", "risk_labels"):
        assert shop.store.count(table) == 0, table
    fresh = shop.risk.engine().velocity.query(
        __import__("shopmind.risk.velocity", fromlist=["Observation"]).Observation(
            "probe", NOW + 5000, 1.0, {"card": shop.pseudonyms.token("instrument", "card-4242")}))
    assert fresh["card_count_30d"] == 1  # only the probe itself: alice's use of the card is gone


def _card_uses(shop) -> int:
    from shopmind.risk.velocity import Observation

    probe = Observation("probe", NOW + 10**9, 1.0, {"card": shop.pseudonyms.token("instrument", "card-4242")})
    return shop.risk.engine().velocity.query(probe)["card_count_30d"] - 1  # less the probe itself


def test_a_late_retry_of_an_erased_users_event_is_refused_and_records_nothing(shop, client, keys):
    import asyncio

    shop.risk.put_rule(Rule("all", "event.amount > 1.0", "review", mode="enforce"), actor="t")
    shop.risk.decide(RiskEvent(**order(1)))
    shop.erase_user("alice", actor="t")
    assert shop.store.count("risk_decisions") == 0 and _card_uses(shop) == 0

    with pytest.raises(InvalidInputError) as refused:
        shop.risk.decide(RiskEvent(**order(1)))           # the same event again, after the erasure
    assert refused.value.field == "user_id" and "alice" not in str(refused.value)
    with pytest.raises(InvalidInputError):
        asyncio.run(shop.risk.decide_async(RiskEvent(**order(2))))  # a different one, also from before
    r = client.post("/v1/risk/decisions", json=order(3), headers=auth(keys["risk"]))
    assert r.status_code == 422 and r.json()["field"] == "user_id"
    for table in ("risk_decisions", "risk_cases"):
        assert shop.store.count(table) == 0, table
    assert _card_uses(shop) == 0  # nothing reached the velocity windows either

    # the same person ordering after the erasure is a new customer, decided and logged as any other
    fresh = shop.risk.decide(RiskEvent(**order(4, ts_ms=None)))
    assert fresh.decision == "review" and shop.store.count("risk_decisions") == 1


def test_a_server_refuses_late_retries_of_users_another_process_erased(shop, tmp_path):
    from shopmind.shop import Shop

    shop.risk.decide(RiskEvent(**order(1)))               # this process has read the erasures (none) already
    follower = shop.follow_erasures(interval_s=3600)      # polled by hand below
    other = Shop.open(shop.settings)                      # `shopmind erase-user`, from the command line
    try:
        other.erase_user("alice", actor="cli")
    finally:
        other.close()
    assert follower.poll() == 1
    with pytest.raises(InvalidInputError):
        shop.risk.decide(RiskEvent(**order(2)))
    assert shop.store.count("risk_decisions") == 0


def test_a_late_retry_before_this_process_learnt_of_the_erasure_is_refused_at_its_commit(shop):
    """Another process erased the user and this one has not polled the receipts yet (its follower runs
    every second): the decision log's commit reads the receipts itself, so the late retry is refused,
    logs nothing, and leaves nothing in this process's velocity windows."""
    from shopmind.shop import Shop

    shop.risk.decide(RiskEvent(**order(1)))               # this process has read the erasures (none) already
    other = Shop.open(shop.settings)                      # `shopmind erase-user`, or another API worker
    try:
        other.erase_user("alice", actor="cli")
    finally:
        other.close()
    assert shop.store.count("risk_decisions") == 0 and _card_uses(shop) == 1  # this process still holds it
    with pytest.raises(InvalidInputError) as refused:
        shop.risk.decide(RiskEvent(**order(2)))           # dated before the erasure
    assert refused.value.field == "user_id" and "alice" not in str(refused.value)
    assert shop.store.count("risk_decisions") == 0 and shop.store.count("risk_cases") == 0
    assert _card_uses(shop) == 0  # the refused decision's entries, and the earlier one's, are gone
    # an order after the erasure is a new customer's, decided and logged
    assert shop.risk.decide(RiskEvent(**order(3, ts_ms=None))).decision and shop.store.count("risk_decisions") == 1


_KILL_SCRIPT = """
import asyncio, sys
from pathlib import Path
from shopmind.config import load_settings
from shopmind.shop import Shop
from shopmind.risk.schemas import RiskEvent
shop = Shop.open(load_settings(home=Path(sys.argv[1]), cache_url="memory://"))
def event(i):
    return RiskEvent(event_id=f"k-{i}", kind="payment", user_id=f"u{i % 7}", amount=10.0 + i, card=f"c{i % 5}")
async def serve_async():  # the path the HTTP service takes: concurrent requests sharing group commits
    i = 0
    while True:
        batch = await asyncio.gather(*(shop.risk.decide_async(event(i + j)) for j in range(8)))
        i += 8
        for out in batch:
            print(out.decision_id, flush=True)
if sys.argv[2] == "async":
    asyncio.run(serve_async())
i = 0
while True:
    i += 1
    print(shop.risk.decide(event(i)).decision_id, flush=True)
"""


@pytest.mark.parametrize("path", ["sync", "async"])
def test_acknowledged_decisions_survive_sigkill(tmp_path, path):
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    home = tmp_path / "home"
    Shop.init(load_settings(home=home))[0].close()
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(home), path], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    acknowledged = []
    deadline = time.time() + 60
    while len(acknowledged) < 200 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(acknowledged) >= 200
    shop = Shop.open(load_settings(home=home))
    with shop.store.transaction() as conn:
        stored = {d for (d,) in conn.execute(select(schema.risk_decisions.c.decision_id))}
    shop.close()
    assert set(acknowledged) <= stored


def test_no_decision_is_answered_before_its_commit_finished(shop, monkeypatch):
    """What the SIGKILL test catches by luck, made deterministic: the decision log's commit is held open,
    and no caller (decide, decide_async, a submitted row's future) may have its answer until it ends."""
    import asyncio
    import threading
    from contextlib import contextmanager

    log = shop.risk.log
    store = log.store
    inside, release, committed = threading.Event(), threading.Event(), threading.Event()

    class HeldStore:  # the log's store, whose commit waits for `release` once the group's rows are in
        def __getattr__(self, name):
            return getattr(store, name)

        @contextmanager
        def transaction(self):
            with store.transaction() as conn:
                yield conn
                inside.set()
                release.wait(30)
            committed.set()

    monkeypatch.setattr(log, "store", HeldStore())

    def held(call) -> None:
        inside.clear(), release.clear(), committed.clear()
        answered, seen = threading.Event(), []

        def run():
            call()
            seen.append(committed.is_set())
            answered.set()

        threading.Thread(target=run, daemon=True).start()
        assert inside.wait(30), "the decision never reached its commit"
        assert not answered.wait(0.3), "answered while its commit was held"
        release.set()
        assert answered.wait(30) and seen == [True]

    answers = []
    held(lambda: answers.append(shop.risk.decide(RiskEvent(**order(1)))))
    held(lambda: answers.append(asyncio.run(shop.risk.decide_async(RiskEvent(**order(2))))))
    row = {"decision_id": "direct", "event_id": "o-direct", "kind": "order", "user_pseudonym": None, "ts_ms": NOW,
           "decided_ms": NOW, "decision": "allow", "score": 0.0, "model_score": None, "model_version": None,
           "rules_version": 0, "amount": 1.0, "rules": "{}", "features": "{}", "latency_us": 0}
    held(lambda: answers.append(log.submit(row).result(30)))
    assert [a.event_id for a in answers[:2]] == ["o-1", "o-2"] and answers[2] is None
    with shop.store.transaction() as conn:
        logged = {e for (e,) in conn.execute(select(schema.risk_decisions.c.event_id))}
    assert logged == {"o-1", "o-2", "o-direct"}


def test_training_ignores_labels_recorded_after_the_cutoff_and_unsettled_events(shop):
    start = int(time.time() * 1000) - 10 * DAY_MS
    for i in range(6):  # events of day 0 .. 5, decided now
        shop.risk.decide(RiskEvent(**order(i, ts_ms=start + i * DAY_MS, user_id=f"u{i}")), actor="t")
    cutoff = int(time.time() * 1000) + 1  # 10 days after the first event
    before = training_set(shop.store, cutoff, label_delay_days=7)
    # events of days 0-3 are settled (older than 7 days at the cut-off), days 4-5 are not and have no label
    assert sorted(before.event_ids) == ["o-0", "o-1", "o-2", "o-3"] and before.left_out_unknown == 2
    assert before.y.tolist() == [0, 0, 0, 0]
    # a chargeback recorded after the cut-off, and one that is known in time
    shop.risk.add_labels([{"event_id": "o-1", "fraud": True, "labelled_ms": cutoff + 1}], actor="t")
    shop.risk.add_labels([{"event_id": "o-5", "fraud": True, "labelled_ms": cutoff - 1}], actor="t")
    after = training_set(shop.store, cutoff, label_delay_days=7)
    labelled = dict(zip(after.event_ids, after.y.tolist()))
    assert labelled["o-1"] == 0.0                     # the future chargeback is not used
    assert labelled["o-5"] == 1.0                     # a timely chargeback counts even inside the delay
    assert "o-4" not in labelled                      # still unsettled: left out, not guessed legitimate
    # features are the ones logged at decision time, untouched by the later label
    np.testing.assert_array_equal(after.X[after.event_ids.index("o-1")], before.X[before.event_ids.index("o-1")])
    # o-1 decided again after the cut-off, on other features, and an event from after the cut-off decided
    # (a client clock ahead) and labelled in time: neither is known at the cut-off
    d = schema.risk_decisions
    with shop.store.transaction() as conn:
        logged = conn.execute(select(d).where(d.c.event_id == "o-1")).one()._asdict()
        features = json.loads(logged["features"])
        redone = {k: v + 1.0 if isinstance(v, (int, float)) else v for k, v in features.items()}
        conn.execute(insert(d), [
            {**logged, "decision_id": "o-1-again", "decided_ms": cutoff + 1, "features": json.dumps(redone)},
            {**logged, "decision_id": "ahead", "event_id": "o-ahead", "ts_ms": cutoff + 1, "decided_ms": cutoff - 1}])
    shop.risk.add_labels([{"event_id": "o-ahead", "fraud": True, "labelled_ms": cutoff - 1}], actor="t")
    planted = training_set(shop.store, cutoff, label_delay_days=7)
    assert planted.event_ids == after.event_ids and planted.left_out_unknown == after.left_out_unknown
    np.testing.assert_array_equal(planted.X, after.X)
    np.testing.assert_array_equal(planted.y, after.y)
    np.testing.assert_array_equal(planted.X[planted.event_ids.index("o-1")], logged_vector(features))
    # a later cut-off knows both: the planted rows are real candidates, left out above only by time
    later = training_set(shop.store, cutoff + 1, label_delay_days=7)
    assert "o-ahead" in later.event_ids
    np.testing.assert_array_equal(later.X[later.event_ids.index("o-1")], logged_vector(redone))


def test_model_from_replayed_history_scores_explains_and_backtests(shop, tmp_path):
    from shopmind.risk.backtest import backtest
    from shopmind.risk.training import replay_history, train_risk_model
    from shopmind.synth import generate_shop, write_shop

    paths = write_shop(generate_shop(n_users=400, days=30, seed=3), tmp_path / "data", "parquet")
    for kind in ("items", "users", "events", "orders", "payments"):
        shop.import_file(paths[kind], kind, actor="t")
    replayed = replay_history(shop, label_delay_days=7)
    assert replayed["replayed"] == shop.store.count("orders") + shop.store.count("payments")
    assert replayed["fraud_labels"] > 5
    trained = train_risk_model(shop, "t", cutoff_ms=2**50, label_delay_days=7, n_rounds=50)
    assert trained["n_fraud"] == replayed["fraud_labels"]
    out = shop.risk.decide(RiskEvent(**order(1)))
    assert out.model_version == trained["version"] and 0.0 <= out.model_score <= 1.0
    sizes = [abs(c.contribution) for c in out.contributions]
    assert 0 < len(sizes) <= 5 and sizes == sorted(sizes, reverse=True)  # the strongest reasons, strongest first
    logged = shop.risk.decision(out.decision_id)["features"]
    from shopmind.risk.features import FEATURE_NAMES

    row = np.array([[np.nan if logged[n] is None else logged[n] for n in FEATURE_NAMES]])
    model = shop.risk.engine().model
    assert model.predict_proba(row)[0] == pytest.approx(out.model_score, abs=1e-6)
    # exact TreeSHAP on demand, from the logged features and the model version that decided
    exact = shop.risk.decision(out.decision_id, exact=True)["exact_contributions"]
    shap = model.booster_.predict(row, pred_contrib=True)[0][:-1]
    assert exact and all(c["contribution"] == pytest.approx(shap[FEATURE_NAMES.index(c["feature"])], abs=1e-12)
                         for c in exact)
    assert {FEATURE_NAMES[i] for i in np.flatnonzero(shap)} == {c["feature"] for c in exact}
    report = backtest(shop)
    assert sum(report["decisions"].values()) == report["events"] == replayed["replayed"]
    assert report["fraud"] == replayed["fraud_labels"]
    assert report["suggested_thresholds"]["cost"] <= report["cost"] + 1e-6  # the current pair is a candidate
    by_kind = report["suggested_thresholds_by_kind"]
    assert set(by_kind) == {"order", "payment"}  # the kinds the history holds
    kind_costs = [v["cost"] for v in by_kind.values() if v is not None]
    assert kind_costs and all(c >= 0 for c in kind_costs)
    # tuning each kind on its own can only match or beat one shared pair
    if all(v is not None for v in by_kind.values()):
        assert sum(kind_costs) <= report["suggested_thresholds"]["cost"] + 1e-6


def _saabas_reference(dump: dict, row: np.ndarray, n_features: int) -> tuple[float, np.ndarray]:
    """The path attribution written the slow, obvious way: follow the row down each tree by LightGBM's
    rules for numerical splits and missing values, crediting each split's feature with the value change."""
    contributions, raw = np.zeros(n_features), 0.0
    for tree in dump["tree_info"]:
        node = tree["tree_structure"]
        while "leaf_value" not in node:
            x = row[node["split_feature"]]
            if np.isnan(x) and node["missing_type"] != "NaN":
                x = 0.0
            missing = (node["missing_type"] == "NaN" and np.isnan(x)) or (node["missing_type"] == "Zero" and abs(x) <= 1e-35)
            child = node["left_child"] if (node["default_left"] if missing else x <= node["threshold"]) else node["right_child"]
            value = child["leaf_value"] if "leaf_value" in child else child["internal_value"]
            contributions[node["split_feature"]] += value - node["internal_value"]
            node = child
        raw += node["leaf_value"]
    return raw, contributions


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}])
def test_fast_single_row_explanations_equal_reference_and_lightgbm(params):
    from shopmind.risk.model import RiskModel

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 6))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    y = (np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) > 1.0).astype(float)
    model = RiskModel(n_rounds=40, params={"num_leaves": 15, **params}).fit(X, y, [f"f{i}" for i in range(6)])
    dump = model.booster_.dump_model()
    raw_scores = model.booster_.predict(X[:200], raw_score=True)
    for row, raw in zip(X[:200], raw_scores):
        probability, contributions = model.explain(row)
        reference_raw, reference = _saabas_reference(dump, row, 6)
        np.testing.assert_allclose(contributions, reference, rtol=1e-9, atol=1e-9)
        assert reference_raw == pytest.approx(raw, abs=1e-9)
        assert probability == pytest.approx(model.predict_proba(row.reshape(1, -1))[0], rel=1e-9)
        assert model._paths.bias + contributions.sum() == pytest.approx(raw, abs=1e-9)
        # exact TreeSHAP on demand: the same numbers LightGBM's pred_contrib gives
        probability_exact, shap = model.explain(row, exact=True)
        np.testing.assert_allclose(shap, model.booster_.predict(row.reshape(1, -1), pred_contrib=True)[0][:-1],
                                   rtol=1e-9, atol=1e-12)
        assert probability_exact == pytest.approx(probability, rel=1e-9)


def test_a_later_label_does_not_erase_what_was_known_earlier(shop):
    shop.risk.decide(RiskEvent(**order(1, ts_ms=int(time.time() * 1000) - 40 * DAY_MS)), actor="t")
    now = int(time.time() * 1000)
    shop.risk.add_labels([{"event_id": "o-1", "fraud": False, "source": "analyst",
                           "labelled_ms": now + 1 * DAY_MS}], actor="t")
    shop.risk.add_labels([{"event_id": "o-1", "fraud": True, "source": "chargeback",
                           "labelled_ms": now + 10 * DAY_MS}], actor="t")

    def known(days: int) -> dict:
        data = training_set(shop.store, now + days * DAY_MS, label_delay_days=60)  # never settled unlabelled
        return dict(zip(data.event_ids, data.y.tolist()))

    assert known(0) == {} and known(2) == {"o-1": 0.0} and known(11) == {"o-1": 1.0}


def test_changes_from_another_worker_load_in_the_background_without_stalling_decisions(shop, monkeypatch):
    import shopmind.risk.service as risk_service
    from tests.conftest import make_shop

    other = make_shop(shop.settings.home, shop.settings.database_url)  # a second API worker on the same database
    try:
        assert shop.risk.decide(RiskEvent(**order(1))).decision == "allow"
        other.risk.put_rule(Rule("big", "event.amount > 50.0", "block"), actor="analyst")

        build = shop.risk._build
        def slow_build():
            time.sleep(1.0)  # a model load on a busy machine
            return build()
        monkeypatch.setattr(shop.risk, "_build", slow_build)
        monkeypatch.setattr(risk_service, "RELOAD_S", 0.0)

        started = time.monotonic()
        first = shop.risk.decide(RiskEvent(**order(2)))
        assert time.monotonic() - started < 0.5, "the request waited for the reload"
        assert first.decision == "allow"  # decided by the rules it had
        deadline = time.monotonic() + 10
        while shop.risk._reloading and time.monotonic() < deadline:
            time.sleep(0.05)
        assert shop.risk.decide(RiskEvent(**order(3))).decision == "block"
    finally:
        other.close()


def test_a_served_engine_picks_up_a_change_made_elsewhere_without_a_decision_to_start_the_look(shop, monkeypatch):
    """The look for changes made elsewhere was started by a decision, which the old engine answered: on a
    server idle for a few seconds, a card that `shopmind risk list add` had put on an enforced block list
    was allowed once, however long after (found by a review). A server's engine now looks every RELOAD_S
    on its own (RiskService.watch, started by `shopmind serve`)."""
    import shopmind.risk.service as risk_service
    from tests.conftest import make_shop

    monkeypatch.setattr(risk_service, "RELOAD_S", 0.2)
    shop.risk.add_to_list("stolen", "card", ["c-1"], actor="analyst")
    shop.risk.put_rule(Rule("stolen", "lists.stolen", "block", mode="enforce"), actor="analyst")
    assert shop.risk.decide(RiskEvent(**order(0, card="c-9"))).decision == "allow"  # the engine is built
    shop.risk.watch()
    cli = make_shop(shop.settings.home, shop.settings.database_url)  # `shopmind risk list add`, another process
    try:
        cli.risk.add_to_list("stolen", "card", ["c-9"], actor="analyst")
    finally:
        cli.close()
    time.sleep(1.0)  # quiet: no decision in between
    assert shop.risk.decide(RiskEvent(**order(1, card="c-9"))).decision == "block"


def test_a_change_made_by_this_worker_applies_to_its_next_decision(shop):
    assert shop.risk.decide(RiskEvent(**order(1))).decision == "allow"
    shop.risk.put_rule(Rule("big", "event.amount > 50.0", "block"), actor="analyst")
    assert shop.risk.decide(RiskEvent(**order(2))).decision == "block"


def test_an_event_kind_can_have_its_own_thresholds_audited_and_removable(shop, client, keys):
    shop.risk.put_rule(Rule("big", "event.amount > 50.0", "score", weight=0.6), actor="t")
    login = {**order(1), "kind": "login", "amount": 80.0, "event_id": "l-1"}
    assert shop.risk.decide(RiskEvent(**order(1))).decision == "review"       # 0.6: shop-wide review 0.5
    admin = auth(keys["risk_admin"])
    r = client.put("/v1/risk/thresholds", json={"review": 0.7, "block": 0.95, "kind": "login"}, headers=admin)
    assert r.status_code == 200 and r.json()["by_kind"] == {"login": {"review": 0.7, "block": 0.95}}
    assert r.json()["review"] == 0.5  # the shop-wide pair is unchanged
    assert shop.risk.decide(RiskEvent(**login)).decision == "allow"           # 0.6 < login review 0.7
    assert shop.risk.decide(RiskEvent(**order(2))).decision == "review"       # orders follow the shop-wide pair
    # a new shop-wide pair keeps the login pair
    assert client.put("/v1/risk/thresholds", json={"review": 0.55, "block": 0.9}, headers=admin).json()["by_kind"]
    r = client.put("/v1/risk/thresholds", json={"review": 0.9, "block": 0.8, "kind": "login"}, headers=admin)
    assert r.status_code == 422 and "review" in r.text
    assert client.put("/v1/risk/thresholds", json={"review": 0.1, "block": 0.2, "kind": "signup"},
                      headers=admin).status_code == 422
    assert client.delete("/v1/risk/thresholds/login", headers=admin).json()["by_kind"] == {}
    assert client.delete("/v1/risk/thresholds/login", headers=admin).status_code == 404
    assert shop.risk.decide(RiskEvent(**{**login, "event_id": "l-2"})).decision == "review"
    with shop.store.transaction() as conn:
        changes = [json.loads(e["detail"]) for e in audit_entries(conn) if e["action"] == "risk.thresholds.set"]
    changes.reverse()  # newest first -> in order
    assert [c["kind"] for c in changes] == ["login", None, "login"]
    assert changes[0]["after"]["by_kind"] == {"login": {"review": 0.7, "block": 0.95}}
    assert changes[-1]["before"]["by_kind"] and changes[-1]["after"]["by_kind"] == {}


def test_a_rule_keeps_working_when_the_list_it_reads_is_emptied(shop):
    """A list exists while it has entries; a rule that reads it must not silently stop compiling (and so
    stop firing) when its last entry is removed."""
    shop.risk.add_to_list("stolen", "card", ["card-9999"], actor="t")
    shop.risk.put_rule(Rule("burst", "lists.stolen || card.count_1h >= 3", "block", mode="enforce"), actor="t")
    shop.risk.remove_from_list("stolen", "card", ["card-9999"], actor="t")
    outcomes = [shop.risk.decide(RiskEvent(**order(i, card="card-1"))) for i in range(3)]
    assert [o.failed_rules for o in outcomes] == [[], [], []]
    assert [o.decision for o in outcomes] == ["allow", "allow", "block"]
    # a new version of the rule can still be saved while the list is empty
    shop.risk.put_rule(Rule("burst", "lists.stolen || card.count_1h >= 4", "block", mode="enforce"), actor="t")


def test_an_entity_the_event_does_not_carry_has_no_previous_event(shop):
    """A login without a device must not look like a device seen 0 s before (seconds_since_prev -1, as for
    a device never seen)."""
    shop.risk.put_rule(Rule("rapid_device", "device.seconds_since_prev >= 0.0 && device.seconds_since_prev < 2.0",
                            "block", mode="enforce"), actor="t")
    login = {"event_id": "l-1", "kind": "login", "ts_ms": NOW, "user_id": "bob", "amount": 0.0}
    assert shop.risk.decide(RiskEvent(**login)).decision == "allow"
    first = shop.risk.decide(RiskEvent(**order(1, device_id="dev-7")))
    again = shop.risk.decide(RiskEvent(**order(2, device_id="dev-7")))  # a second later
    assert first.decision == "allow" and again.decision == "block"


def test_a_rule_whose_value_is_not_a_boolean_is_reported_as_failed(shop):
    shop.risk.put_rule(Rule("odd", 'event.kind == "login" ? false : event.amount > 10.0 ? 1.0 : false', "review",
                            mode="enforce"), actor="t")
    out = shop.risk.decide(RiskEvent(**order(1)))
    assert out.failed_rules == ["odd"] and out.decision == "allow"


@pytest.mark.parametrize("name", ["abc\n", "abc\nx", "Abc"])
def test_rule_and_list_names_are_checked_whole(shop, name):
    with pytest.raises(InvalidInputError):
        shop.risk.put_rule(Rule(name, "event.amount > 1.0", "review"), actor="t")
    with pytest.raises(InvalidInputError):
        shop.risk.add_to_list(name, "card", ["c-1"], actor="t")


def test_a_retry_after_the_answer_gets_the_same_answer_and_is_not_counted_again(shop):
    import asyncio

    shop.risk.put_rule(Rule("big", "event.amount > 50.0", "review", mode="enforce"), actor="t")
    shop.risk.put_rule(Rule("watch", "card.count_1h >= 0", "score", weight=0.1, mode="shadow"), actor="t")
    first = shop.risk.decide(RiskEvent(**order(1)))
    assert first.rules and first.shadow_rules and first.case_id is not None
    again = shop.risk.decide(RiskEvent(**order(1)))
    assert again == first                                      # kept as JSON, read back field for field
    assert asyncio.run(shop.risk.decide_async(RiskEvent(**order(1)))) == first
    assert shop.store.count("risk_decisions") == 1 and shop.store.count("risk_cases") == 1
    assert _card_uses(shop) == 1


def test_a_retry_that_arrives_while_the_first_request_commits_is_not_decided_again(shop, monkeypatch):
    """Two requests with one event id, the second while the first is still committing: one decision, one
    log row, one case, one count in the velocity windows, and the same answer for both."""
    import asyncio
    import threading

    shop.risk.put_rule(Rule("always", "event.amount > 0.0", "review", mode="enforce"), actor="t")
    log = shop.risk.log
    submit = log.submit
    gate = threading.Event()

    def slow_submit(*args, **kwargs):  # the commit of the first request takes a while (both paths submit)
        gate.wait(5)
        return submit(*args, **kwargs)

    monkeypatch.setattr(log, "submit", slow_submit)
    event = RiskEvent(**{k: v for k, v in order(1).items() if k != "ts_ms"})  # no ts_ms: now, twice

    async def both():
        first = asyncio.create_task(shop.risk.decide_async(event))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(shop.risk.decide_async(event))
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await second

    a, b = asyncio.run(both())
    gate.clear()
    threaded = []
    t = threading.Thread(target=lambda: threaded.append(shop.risk.decide(RiskEvent(**order(2)))))
    t.start()
    time.sleep(0.05)
    other = threading.Thread(target=lambda: threaded.append(shop.risk.decide(RiskEvent(**order(2)))))
    other.start()
    time.sleep(0.05)
    gate.set()
    t.join(10)
    other.join(10)
    assert a.decision_id == b.decision_id and threaded[0].decision_id == threaded[1].decision_id
    d, c = schema.risk_decisions, schema.risk_cases
    with shop.store.transaction() as conn:
        assert conn.execute(select(d.c.event_id).where(d.c.event_id == event.event_id)).all() == [(event.event_id,)]
        assert len(conn.execute(select(c.c.case_id)).all()) == 2  # one per event
    from shopmind.risk.velocity import Observation

    card = shop.pseudonyms.token("instrument", "card-4242")
    probe = shop.risk.engine().velocity.query(Observation("probe", int(time.time() * 1000) + 1, 1.0, {"card": card}))
    assert probe["card_count_1h"] == 2  # the retried event once, and the probe (order 2 is months earlier)


def test_a_later_replay_counts_the_history_it_replayed_before(tmp_path):
    """`shopmind risk replay` in a new process (empty in-process windows) passes over events it logged
    before, but the new events after them must still see them in their velocity features."""
    from shopmind.config import load_settings
    from shopmind.risk.training import replay_history
    from shopmind.shop import Shop
    from tests.conftest import make_shop

    def orders(ids):
        return [{"order_id": f"o{i}", "user_id": "u1", "ts": f"2026-03-01T10:0{i}:00Z", "amount": 20.0,
                 "payment_instrument": "card-1", "device_id": "dev-1"} for i in ids]

    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = make_shop(home, db)
    first.ingest("orders", orders([0, 1, 2]), actor="t")
    assert replay_history(first)["replayed"] == 3
    first.close()
    later = Shop.open(load_settings(home=home, database_url=db))
    try:
        later.ingest("orders", orders([3]), actor="t")
        assert replay_history(later)["replayed"] == 1
        d = schema.risk_decisions
        with later.store.transaction() as conn:
            features = json.loads(conn.execute(select(d.c.features).where(d.c.event_id == "order:o3")).scalar_one())
        assert features["user_count_1h"] == 4 and features["new_card"] == 0
    finally:
        later.close()


def test_a_backtest_applies_a_list_entry_only_from_when_it_was_added(shop):
    """A card put on a block list after its chargeback was on no list when it paid: a backtest that
    stopped its past orders with today's list would report fraud the live service could not have caught."""
    from sqlalchemy import update

    from shopmind.risk.backtest import backtest

    shop.ingest("orders", [{"order_id": f"o{i}", "user_id": f"u{i}", "ts": f"2026-03-01T10:0{i}:00Z", "amount": 50.0,
                            "payment_instrument": f"card-{i}", "label_fraud": i == 0} for i in range(3)], actor="t")
    shop.risk.add_to_list("stolen", "card", ["card-0"], actor="t")  # today: after the orders
    shop.risk.put_rule(Rule("stolen", "lists.stolen", "block", mode="enforce"), actor="t")
    report = backtest(shop)
    assert report["events"] == 3 and report["fraud"] == 1
    assert report["decisions"]["block"] == 0 and report["fraud_stopped"] == 0
    o0_ms = 1772359200000  # 2026-03-01T10:00:00Z
    for added_ms, blocked in ((o0_ms + 1, 0), (o0_ms, 1), (o0_ms - 60_000, 1)):
        with shop.store.transaction() as conn:
            conn.execute(update(schema.risk_list_entries).values(added_ms=added_ms))
        report = backtest(shop)
        assert report["decisions"]["block"] == blocked and report["fraud_stopped"] == blocked
    # the live service, deciding now, sees the list as it is
    assert shop.risk.decide(RiskEvent(**order(1, card="card-0"))).decision == "block"


def test_a_backtest_reports_each_rules_hits_against_the_labels_and_every_fraud_outcome(shop):
    """Step 3 of "shadow to enforcement" (compare a rule's hits with the labels) had no tool: the backtest
    named no rule and `risk alerts` counts only jumps; it also lacked the fraud allowed and the amounts
    stopped and reviewed that docs/risk.md lists, and `--since` after `--until` gave an empty report as
    if the period had been quiet (found by a review)."""
    from shopmind.exceptions import InvalidInputError
    from shopmind.risk.backtest import backtest

    amounts = [900.0, 40.0, 700.0, 30.0, 600.0]
    shop.ingest("orders", [{"order_id": f"o{i}", "user_id": f"u{i}", "ts": f"2026-03-01T10:0{i}:00Z",
                            "amount": amounts[i], "payment_instrument": f"card-{i}", "label_fraud": i in (0, 1)}
                           for i in range(5)], actor="t")
    shop.risk.put_rule(Rule("big", "event.amount > 500.0", "block", mode="shadow"), actor="t")
    shop.risk.put_rule(Rule("tiny", "event.amount < 35.0", "review", mode="enforce"), actor="t")
    report = backtest(shop)
    assert report["rules"]["big"] == {"version": 1, "action": "block", "mode": "shadow", "hits": 3, "fraud_hits": 1,
                                      "hit_amount": 2200.0, "fraud_hit_amount": 900.0, "precision": 0.3333,
                                      "recall": 0.5}
    assert report["rules"]["tiny"]["hits"] == 1 and report["rules"]["tiny"]["fraud_hits"] == 0
    assert report["decisions"]["block"] == 0  # the shadow rule changed no decision
    assert (report["fraud_stopped"], report["fraud_reviewed"], report["fraud_allowed"]) == (0, 0, 2)
    assert (report["fraud_amount_stopped"], report["fraud_amount_reviewed"], report["fraud_amount_allowed"]) == (
        0.0, 0.0, 940.0)
    with pytest.raises(InvalidInputError) as refused:
        backtest(shop, since_ms=1772359200000, until_ms=1772359200000 - 1)
    assert refused.value.field == "until"


@pytest.mark.parametrize("days", [-3.0, float("nan"), 366.0])
def test_a_label_delay_that_is_negative_or_not_a_number_is_refused_before_anything_is_written(shop, days):
    """`risk replay --label-delay-days -3` stored every replayed label as known three days before its event
    (labels are appended, never rewritten), and `risk train --label-delay-days -1` promoted a model on
    labels from the future; NaN failed later with an unrelated message (found by a review)."""
    from shopmind.exceptions import InvalidInputError
    from shopmind.risk.training import replay_history, train_risk_model

    shop.ingest("orders", [{"order_id": "o1", "user_id": "u1", "ts": "2026-03-01T10:00:00Z", "amount": 5.0,
                            "label_fraud": True}], actor="t")
    for call in (lambda: replay_history(shop, days), lambda: train_risk_model(shop, "t", label_delay_days=days)):
        with pytest.raises(InvalidInputError) as refused:
            call()
        assert refused.value.field == "label_delay_days"
    assert shop.store.count("risk_decisions") == 0 and shop.store.count("risk_labels") == 0


def test_a_profile_update_reaches_the_next_decision(shop):
    """A user's country and sign-up time are cached for decisions (10 minutes); a profile update drops
    them, so the next decision reads the new ones (it used the stale ones until the entry expired)."""
    shop.ingest("users", [{"user_id": "alice", "signup_ts": "2026-01-01T00:00:00Z"}], actor="t")
    first = shop.risk.decide(RiskEvent(**order(1)))
    shop.ingest("users", [{"user_id": "alice", "signup_ts": "2026-05-01T00:00:00Z"}], actor="crm")
    second = shop.risk.decide(RiskEvent(**order(2)))
    ages = [shop.risk.decision(d.decision_id)["features"]["account_age_days"] for d in (first, second)]
    assert ages[0] == pytest.approx(ages[1] + 120, abs=0.1)  # sign-up moved 120 days later


def test_a_backtest_keeps_an_account_a_rule_froze_frozen_for_its_later_events(shop):
    """Live, a freeze_account decision freezes the account and the user's later events are frozen too;
    the backtest's engine had no frozen state and reported those later frauds as allowed."""
    from shopmind.risk.backtest import backtest

    orders = [("o0", 950.0), ("o1", 60.0), ("o2", 70.0)]
    shop.ingest("orders", [{"order_id": oid, "user_id": "mallory", "ts": f"2026-03-01T10:0{i}:00Z", "amount": amount,
                            "payment_instrument": "card-9", "label_fraud": True}
                           for i, (oid, amount) in enumerate(orders)], actor="t")
    shop.risk.put_rule(Rule("huge", "event.amount > 900.0", "freeze_account", mode="enforce"), actor="t")
    report = backtest(shop)
    assert report["decisions"]["freeze_account"] == 3 and report["fraud_stopped"] == 3, report["decisions"]


def test_a_replayed_guest_order_of_a_user_who_signed_up_later_has_no_profile(shop):
    """Replays read today's profile: a guest order followed by a sign-up days later got a negative
    account age, a value no live decision could have had (live, there was no profile yet)."""
    from shopmind.risk.training import replay_history

    shop.ingest("orders", [{"order_id": "o0", "user_id": "guest1", "ts": "2026-03-01T10:00:00Z", "amount": 80.0,
                            "shipping_country": "DE", "payment_instrument": "card-1"}], actor="t")
    shop.ingest("users", [{"user_id": "guest1", "signup_ts": "2026-03-10T10:00:00Z", "country": "FR"}], actor="t")
    replay_history(shop)
    with shop.store.transaction() as conn:
        features = json.loads(conn.execute(select(schema.risk_decisions.c.features)
                                           .where(schema.risk_decisions.c.event_id == "order:o0")).scalar_one())
    assert features["account_age_days"] is None and features["shipping_vs_user_country"] == 0.0, features


def test_freezes_hold_while_an_engine_reload_keeps_failing(shop, monkeypatch):
    """A reload that fails keeps the last good engine (a promoted model it cannot use, say). That engine
    read the frozen accounts through the set it was built with, which the failed rebuild had replaced:
    an analyst's freeze was not enforced, and an unfrozen account was frozen again by the next decision
    (found by a review)."""
    shop.risk.freeze("dave", actor="cli:dana")
    assert shop.risk.decide(RiskEvent(**order(1, user_id="dave"))).decision == "freeze_account"
    build = shop.risk._build

    def build_then_fail():
        build()  # reads the lists, frozen accounts and rules, then the model cannot be loaded
        raise ValueError("the risk model was trained on a different feature set; retrain it")

    monkeypatch.setattr(shop.risk, "_build", build_then_fail)
    monkeypatch.setattr(shop.risk, "_state_stamp", lambda: "changed")
    shop.risk._reload()  # the failed reload: the last good engine stays
    shop.risk.freeze("alice", actor="cli:dana")
    assert shop.risk.decide(RiskEvent(**order(2))).decision == "freeze_account"
    shop.risk.unfreeze("dave", actor="cli:dana")
    assert shop.risk.decide(RiskEvent(**order(3, user_id="dave"))).decision == "allow"
    a = schema.risk_accounts
    with shop.store.transaction() as conn:
        assert not conn.execute(select(a.c.frozen).where(a.c.pseudonym == shop.pseudonym("dave"))).scalar()


def test_the_logged_rules_version_is_the_rulebook_that_decided(shop, monkeypatch):
    """The rules and the rulebook's stamp were read apart: a rule another process wrote in between was
    counted in the rules_version every decision logged, though the engine never had it (found by a review)."""
    import shopmind.risk.service as service_module

    shop.risk.put_rule(Rule("r_old", "event.amount > 1.0", "review", mode="enforce"), actor="t")
    referenced = service_module.referenced_lists

    def rules_read_then_another_process_writes(rules):
        if not hasattr(rules_read_then_another_process_writes, "done"):
            rules_read_then_another_process_writes.done = True
            with shop.store.transaction() as conn:  # what `shopmind risk rule ...` elsewhere writes meanwhile
                conn.execute(insert(schema.risk_rules).values(
                    rule_id="r_new", version=1, expression="event.amount > 1.0", action="block", weight=0.0,
                    mode="enforce", description="", active=True, created_ms=0, actor="cli:other"))
        return referenced(rules)

    monkeypatch.setattr(service_module, "referenced_lists", rules_read_then_another_process_writes)
    shop.risk.invalidate()
    decided = shop.risk.decide(RiskEvent(**order(1, amount=5.0)))
    assert [h.rule_id for h in decided.rules] == ["r_old"] and decided.decision == "review"
    with shop.store.transaction() as conn:
        ids = dict(conn.execute(select(schema.risk_rules.c.rule_id, schema.risk_rules.c.id)).all())
    assert decided.rules_version == ids["r_old"] < ids["r_new"]


@pytest.mark.parametrize("actions, user, expected", [
    # the documented precedence: freeze over block over allow over review over thresholds
    (("allow", "block"), "alice", "block"),         # an allow-listed customer with a stolen card is blocked
    (("allow", "review"), "alice", "allow"),
    (("review", "block"), "alice", "block"),
    (("freeze_account", "block"), "alice", "freeze_account"),
    (("freeze_account",), None, "block"),            # a guest event: no account to freeze
])
def test_rule_outcomes_combine_in_the_documented_order(shop, actions, user, expected):
    """Each pair fired together on one event (found untested by a mutation review: swapping the block and
    allow branches, or allow and review, passed every test)."""
    for n, action in enumerate(actions):
        shop.risk.put_rule(Rule(f"r{n}", "event.amount > 50.0", action, mode="enforce"), actor="t")
    event = order(1, **({} if user else {"user_id": None}))
    assert shop.risk.decide(RiskEvent(**event)).decision == expected


def test_shadow_score_rules_leave_the_score_alone_and_thresholds_are_inclusive(shop):
    """A score rule in shadow mode is evaluated and logged, not added to the score; a score exactly at a
    threshold takes that threshold's outcome ("at or above"). Both survived mutation untested."""
    shop.risk.set_thresholds(0.3, 0.6, actor="t")
    shop.risk.put_rule(Rule("tryout", "event.amount > 50.0", "score", weight=0.6, mode="shadow"), actor="t")
    out = shop.risk.decide(RiskEvent(**order(1)))
    assert out.score == 0.0 and out.decision == "allow" and [h.rule_id for h in out.shadow_rules] == ["tryout"]
    shop.risk.put_rule(Rule("tryout", "event.amount > 50.0", "score", weight=0.3, mode="enforce"), actor="t")
    assert shop.risk.decide(RiskEvent(**order(2))).decision == "review"   # 0.3 is at the review threshold
    shop.risk.put_rule(Rule("tryout", "event.amount > 50.0", "score", weight=0.6, mode="enforce"), actor="t")
    assert shop.risk.decide(RiskEvent(**order(3))).decision == "block"    # 0.6 is at the block threshold


def test_a_threshold_reason_names_the_pair_that_decided(shop):
    """An order decided by the shop-wide pair was explained as "the order review threshold" (found by a
    risk docs review); a kind's own pair is named by its kind."""
    shop.risk.set_thresholds(0.3, 0.9, actor="t")
    shop.risk.put_rule(Rule("bump", "event.amount > 50.0", "score", weight=0.5, mode="enforce"), actor="t")
    out = shop.risk.decide(RiskEvent(**order(1)))
    assert out.decision == "review" and "score 0.500 is at or above the shop-wide review threshold" in out.reasons
    shop.risk.set_thresholds(0.2, 0.4, actor="t", kind="order")
    out = shop.risk.decide(RiskEvent(**order(2)))
    assert out.decision == "block" and "score 0.500 is at or above the order block threshold" in out.reasons


def test_a_watched_engine_keeps_decisions_off_the_reload_lock(shop, monkeypatch):
    """With the watcher running, a decision that found the last look RELOAD_S old still went for the
    reload lock, which the watcher holds while it looks (and loads a model): the decision waited for the
    watcher's whole reload (found by a review as redundant reload threads)."""
    import shopmind.risk.service as risk_service

    monkeypatch.setattr(risk_service, "RELOAD_S", 0.05)
    shop.risk.decide(RiskEvent(**order(0)))
    stamp = shop.risk._state_stamp

    def slow_stamp():  # the watcher's look takes a while (a model load, a busy database)
        time.sleep(0.6)
        return stamp()

    monkeypatch.setattr(shop.risk, "_state_stamp", slow_stamp)
    shop.risk.watch()
    time.sleep(0.2)  # the watcher is inside its look, holding the lock
    started = time.monotonic()
    shop.risk.decide(RiskEvent(**order(1)))
    assert time.monotonic() - started < 0.3, "the decision waited for the watcher's reload"
