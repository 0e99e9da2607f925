"""Consent per purpose: excluded from that purpose's training data and outputs."""

from __future__ import annotations

import json

from tests.conftest import auth, event, make_shop


def _seed(shop):
    shop.ingest("users", [
        {"user_id": "yes", "consent_personalization": True, "consent_advertising": False},
        {"user_id": "no", "consent_personalization": False, "consent_advertising": True},
    ], actor="t")
    shop.ingest("items", [{"item_id": f"i{n}", "title": f"I{n}"} for n in range(4)], actor="t")
    shop.ingest("events",
                [event(n, user="yes", kind="purchase", item="i1") for n in range(5)]
                + [event(10 + n, user="no", kind="purchase", item="i2") for n in range(9)]
                + [event(30 + n, user="unknown", kind="view", item="i3") for n in range(3)]
                + [event(40 + n, user=None, session_id="anon-1", kind="view", item="i0") for n in range(2)],
                actor="t")


def test_training_data_follows_consent(shop):
    _seed(shop)
    yes, no, unknown = (shop.pseudonym(u) for u in ("yes", "no", "unknown"))
    users = shop.training_events("personalization")["user_pseudonym"].to_list()
    assert users.count(yes) == 5 and no not in users and unknown not in users  # opt-in default
    assert users.count(None) == 2  # anonymous session events
    ads = shop.training_events("advertising")["user_pseudonym"].to_list()
    assert yes not in ads and ads.count(no) == 9


def test_default_consent_applies_to_unknown_users(tmp_path, database_url):
    shop = make_shop(tmp_path / "h", database_url, default_consent=True)
    _seed(shop)
    users = shop.training_events("personalization")["user_pseudonym"].to_list()
    assert users.count(shop.pseudonym("unknown")) == 3 and shop.pseudonym("no") not in users


def test_recommendations_without_consent_are_not_personalised(client, keys, shop, monkeypatch):
    from shopmind.shop import CONSENT

    # The profile sync's fence on cached consent lasts 5 s; without it gone, the flags would never be
    # cached before the withdrawal below, and a withdrawal that left them cached would pass (found by a
    # review of the tests)
    monkeypatch.setattr("shopmind.shop.CHANGE_FENCE_S", 0.0)
    _seed(shop)
    shop.train(actor="t")
    # i2 is most popular only through the non-consenting user's purchases, which must not count.
    items = [r["item_id"] for r in client.get("/v1/users/yes/recommendations?k=4",
                                              headers=auth(keys["recommend"])).json()["items"]]
    assert "i2" not in items
    assert "i1" not in items  # 'yes' bought i1: excluded as already purchased (a personal touch)
    r = client.get("/v1/users/no/recommendations?k=4", headers=auth(keys["recommend"])).json()
    assert r["personalised"] is False
    assert [x["item_id"] for x in r["items"]][0] == "i1"  # plain popularity, own history not used
    # Withdrawing consent takes effect at once, over the flags the requests above cached.
    assert shop.cache.get(CONSENT, shop.pseudonym("yes")) is not None
    client.put("/v1/users/yes/consent", json={"personalization": False}, headers=auth(keys["admin"]))
    r = client.get("/v1/users/yes/recommendations?k=4", headers=auth(keys["recommend"])).json()
    assert r["personalised"] is False and r["items"][0]["item_id"] == "i1"


def test_consent_is_recorded_for_a_user_without_a_profile(shop):
    """A withdrawal for a user known by events alone (or not known yet) is recorded and honoured, not
    refused with 'no such user' (before, with default_consent on, such a user's events stayed in training)."""
    from shopmind.privacy import consent as consent_module

    shop.ingest("events", [event(i, user="carol", kind="view", item=f"i{i}") for i in range(3)], actor="t")
    assert shop.set_consent("carol", {"personalization": False}, actor="t")["personalization"] is False
    assert consent_module.consent_flags(shop.store, shop.pseudonym("carol"), True)["personalization"] is False
    assert shop.set_consent("dave", {"analytics": True}, actor="t")["analytics"] is True  # not known at all yet
    assert shop.export_user("dave", actor="t")["user_id"] == "dave"  # vaulted: export and rotation reach it


def test_export_lists_a_user_known_only_to_the_risk_engine(shop):
    """Risk decisions and a freeze are data held about the user: the export lists them (it answered 'no
    data is held' when the user had no vault row)."""
    import time

    from shopmind.risk.schemas import RiskEvent

    shop.risk.decide(RiskEvent(event_id="e1", kind="order", user_id="erin", amount=5.0,
                               ts_ms=int(time.time() * 1000) - 1000))
    shop.risk.freeze("erin", actor="analyst")
    out = shop.export_user("erin", actor="t")
    assert out["user_id"] == "erin" and len(out["risk_decisions"]) == 1 and len(out["risk_accounts"]) == 1


def test_consent_sent_with_a_profile_is_audited_as_consent(shop):
    """`PUT .../consent` is audited as user.consent with the flags; the same withdrawal sent in a profile
    (POST /v1/users, `shopmind import users`) was audited only as user.write {"fields": "profile"}, which
    did not say that consent changed, nor to what (found by a privacy review)."""
    from shopmind.privacy.audit import audit_entries

    shop.ingest("users", [{"user_id": "u1", "consent_personalization": False, "consent_analytics": False},
                          {"user_id": "u2", "consent_personalization": False, "consent_analytics": False},
                          {"user_id": "u3", "country": "DE"}], actor="t")
    with shop.store.transaction() as conn:
        consent = {e["subject_pseudonym"]: json.loads(e["detail"]) for e in audit_entries(conn)
                   if e["action"] == "user.consent"}
    assert consent == {shop.pseudonym(u): {"personalization": False, "analytics": False, "via": "profile"}
                       for u in ("u1", "u2")}
