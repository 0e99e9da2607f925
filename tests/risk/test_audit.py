"""Changes to lists and cases are audited with what changed: the list entries added or removed (keyed
tokens, never the raw values) and the case's status before and after the verdict."""

from __future__ import annotations

import json

from shopmind.privacy.audit import audit_entries
from shopmind.risk.rules import Rule
from shopmind.risk.schemas import RiskEvent

NOW = 1_780_000_000_000


def _entries(shop, action: str) -> list[dict]:
    with shop.store.transaction() as conn:
        entries = [e for e in audit_entries(conn) if e["action"] == action]
    return [{**e, "detail": json.loads(e["detail"])} for e in reversed(entries)]  # oldest first


def test_list_changes_are_audited_with_the_entries_they_added_or_removed(shop):
    card = lambda value: shop.pseudonyms.token("instrument", value)  # noqa: E731 - the stored token
    shop.risk.add_to_list("stolen", "card", ["card-1"], actor="t")
    shop.risk.add_to_list("stolen", "card", ["card-1", "card-2", "card-3"], actor="t")  # card-1 is on it already
    shop.risk.remove_from_list("stolen", "card", ["card-2", "card-9"], actor="t")      # card-9 never was
    added, removed = _entries(shop, "risk.list.add"), _entries(shop, "risk.list.remove")
    assert [e["detail"]["tokens"] for e in added] == [[card("card-1")], sorted([card("card-2"), card("card-3")])]
    assert [e["detail"]["added"] for e in added] == [1, 2]
    assert removed[0]["detail"]["tokens"] == [card("card-2")] and removed[0]["detail"]["removed"] == 1
    text = json.dumps(added + removed)
    assert not any(raw in text for raw in ("card-1", "card-2", "card-3", "card-9"))


def test_a_user_list_change_is_in_each_users_audit_trail(shop):
    """Entries of a user list are users' pseudonyms: each change is an entry about that user, which their
    data export shows, rather than a token in someone else's entry."""
    shop.risk.add_to_list("watched", "user", ["alice", "bob"], actor="t")
    shop.risk.remove_from_list("watched", "user", ["bob"], actor="t")
    alice, bob = shop.pseudonyms.user("alice"), shop.pseudonyms.user("bob")
    added, removed = _entries(shop, "risk.list.add"), _entries(shop, "risk.list.remove")
    assert sorted(e["subject_pseudonym"] for e in added) == sorted([alice, bob])
    assert [e["subject_pseudonym"] for e in removed] == [bob]
    assert all(e["detail"]["list"] == "watched" and e["detail"]["kind"] == "user" for e in added + removed)
    assert "alice" not in json.dumps(added) and "bob" not in json.dumps(removed)


def test_a_case_resolution_is_audited_with_its_status_before_and_after(shop):
    shop.risk.put_rule(Rule("always", "event.amount > 0.0", "review", mode="enforce"), actor="t")
    case_id = shop.risk.decide(RiskEvent(event_id="o-1", kind="order", ts_ms=NOW, user_id="alice",
                                         amount=80.0)).case_id
    resolved = shop.risk.resolve_case(case_id, "legitimate", actor="analyst:ann")
    (entry,) = _entries(shop, "risk.case.resolve")
    detail = entry["detail"]
    assert detail["case_id"] == case_id and detail["verdict"] == "legitimate"
    assert detail["before"] == {"status": "open", "resolved_ms": None, "resolved_by": None}
    assert detail["after"] == {"status": "legitimate", "resolved_ms": resolved["resolved_ms"],
                               "resolved_by": "analyst:ann"}
