"""The behaviour model inside the shop: training from events, personalised answers with reasons,
filters, sessions, similar items, the promotion gate, hot swap under load, erasure and retraining."""

from __future__ import annotations

import threading

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from shopmind.api.main import create_app
from shopmind.auth import Scope, create_key
from shopmind.recommend.service import STATE, _pack, _unpack
from shopmind.shop import RECENT
from shopmind.synth import generate_shop, write_shop
from tests.conftest import auth, make_shop


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    synthetic = generate_shop(n_users=400, days=20, seed=3)
    paths = write_shop(synthetic, root / "data", "parquet")
    shop = make_shop(root / "home", f"sqlite:///{root / 'db.sqlite'}")
    for kind in ("items", "users", "events"):
        shop.import_file(paths[kind], kind, actor="t")
    # A brand-new item nobody has touched, described like the catalog's first item.
    first = synthetic.items.row(0, named=True)
    shop.ingest("items", [{"item_id": "brand-new", "title": first["title"] + " (new edition)",
                           "category": first["category"], "price": first["price"]}], actor="t")
    result = shop.train(actor="t", time_budget_s=8)
    yield shop, synthetic, result
    shop.close()


def _categories(synthetic) -> dict[str, str]:
    """Every catalog item's category, the fixture's untouched item included (it may be recommended)."""
    categories = dict(zip(synthetic.items["item_id"], synthetic.items["category"]))
    categories["brand-new"] = synthetic.items["category"][0]
    return categories


def _consenting_user_with_purchase(synthetic) -> tuple[str, str]:
    users = synthetic.users.filter(pl.col("consent_personalization"))["user_id"]
    bought = synthetic.events.filter((pl.col("type") == "purchase") & pl.col("user_id").is_in(users.to_list()))
    durable = synthetic.items.filter(~pl.col("consumable"))["item_id"]
    row = bought.filter(pl.col("item_id").is_in(durable.to_list())).row(0, named=True)
    return row["user_id"], row["item_id"]


def _durable_bought_before_the_recent_window(shop, synthetic) -> tuple[str, str]:
    """A consenting user and a durable they bought that is not among their latest events: only the
    purchase exclusion (not the hiding of seen items) keeps it out of their recommendations."""
    users = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()
    durable = synthetic.items.filter(~pl.col("consumable"))["item_id"].to_list()
    bought = synthetic.events.filter((pl.col("type") == "purchase") & pl.col("user_id").is_in(users)
                                     & pl.col("item_id").is_in(durable))
    for row in bought.iter_rows(named=True):
        if row["item_id"] not in {r[0] for r in shop.recent_items(shop.pseudonym(row["user_id"]))}:
            return row["user_id"], row["item_id"]
    pytest.fail("the generated shop has no durable bought before a user's latest events")


def test_first_training_promotes_and_records_a_card(trained):
    shop, _, result = trained
    assert result["behaviour"]["promoted"] and result["behaviour"]["champion_ndcg@10"] is None
    card = shop.registry.card("behaviour", result["behaviour"]["version"])
    assert card["n_users"] > 100 and card["metrics"]["valid_ndcg@10"] > 0 and card["data_window_ms"]
    assert card["train_seconds"] > 0 and "d_model" in card["config"]
    assert 0 < card["holdout_users"] <= min(5000, card["n_sequences"])


@pytest.mark.skipif(not __import__("shopmind.models.text", fromlist=["available"]).available(),
                    reason="the 'text' extra (packaged MiniLM) is not installed")
def test_untouched_items_are_served_by_their_text(trained):
    shop, synthetic, result = trained
    card = shop.registry.card("behaviour", result["behaviour"]["version"])
    assert card["item_text"] is True
    similar = shop.similar_items("brand-new", k=5)["items"]
    categories = dict(zip(synthetic.items["item_id"], synthetic.items["category"]))
    top = synthetic.items["category"][0].split(" > ")[0]
    same = [r for r in similar if categories[r["item_id"]].split(" > ")[0] == top]
    assert len(same) >= 3, similar
    # It can be recommended: for a history inside its category the behaviour model ranks it in the top
    # 10% of the catalog from its title alone. When training attached a blend, its item-kNN half knows
    # nothing of an item nobody touched and pulls it down (seen: rank 26-51 of 501, against 20-28 for
    # the model alone, over time-budgeted trainings), so the served ranking is held to the top 20%.
    version, model = shop.registry.load_current("behaviour")
    index = {item: n for n, item in enumerate(model.item_ids_)}
    in_category = [i for i, c in categories.items() if c == synthetic.items["category"][0] and i in index][:5]
    history = [[index[i] for i in in_category]]
    alone = model.score(history, blended=False)[0]
    assert int((alone > alone[index["brand-new"]]).sum()) < 0.1 * len(alone)
    served = model.score(history)[0]
    assert int((served > served[index["brand-new"]]).sum()) < 0.2 * len(served)


def test_personalised_recommendations_with_reasons_and_no_rebuying_durables(trained):
    shop, synthetic, _ = trained
    user, durable = _consenting_user_with_purchase(synthetic)
    answer = shop.recommend(user, k=20)
    assert answer["personalised"] and answer["model"].startswith("behaviour/")
    items = [r["item_id"] for r in answer["items"]]
    assert durable not in items and len(items) == 20
    titles = dict(zip(synthetic.items["item_id"], synthetic.items["title"]))
    history_titles = {titles[i] for i in synthetic.events.filter(pl.col("user_id") == user)["item_id"].drop_nulls()}
    because = [r["reason"] for r in answer["items"] if r["reason"].startswith("because you")]
    assert because, answer["items"]
    assert all(any(t in reason for t in history_titles) for reason in because)  # reasons name real history
    scores = [r["score"] for r in answer["items"]]
    assert scores == sorted(scores, reverse=True)  # best first
    # a durable bought long ago, outside the recent history that hides seen items: excluded as bought,
    # from the cached candidates and from a k beyond them
    user, durable = _durable_bought_before_the_recent_window(shop, synthetic)
    for k in (20, 150):
        answer = shop.recommend(user, k=k)
        assert answer["personalised"] and len(answer["items"]) == k
        assert durable not in [r["item_id"] for r in answer["items"]], k


def test_new_events_change_recommendations_at_once(trained, monkeypatch):
    """The request itself recomputes after a new event (the background refresh is held off here; the
    fast-path test below covers the refreshed answer)."""
    shop, synthetic, _ = trained
    monkeypatch.setattr(shop.refresher, "submit", lambda pseudonyms: None)
    user, _ = _consenting_user_with_purchase(synthetic)
    before = [r["item_id"] for r in shop.recommend(user, k=10)["items"]]
    shop.recent_items(shop.pseudonym(user))  # warm the cache, as serving does
    target = before[0]
    shop.ingest("events", [{"event_id": f"fresh-{n}", "user_id": user, "type": "purchase", "item_id": target,
                            "ts": f"2026-03-0{n + 1}T10:00:00Z"} for n in range(1)], actor="t")
    after = [r["item_id"] for r in shop.recommend(user, k=10)["items"]]
    consumable = dict(zip(synthetic.items["item_id"], synthetic.items["consumable"]))[target]
    assert after != before
    assert (target in after) == consumable  # a bought durable disappears immediately


def test_category_filter_sessions_and_similar_items(trained):
    shop, synthetic, _ = trained
    user, _ = _consenting_user_with_purchase(synthetic)
    top = synthetic.items["category"][0].split(" > ")[0]
    filtered = shop.recommend(user, k=5, category=top)["items"]
    cats = _categories(synthetic)
    assert filtered and all(cats[r["item_id"]].startswith(top) for r in filtered)
    some_items = synthetic.events.filter(pl.col("type") == "view")["item_id"].head(3).to_list()
    session = shop.recommend_session([{"item_id": i, "type": "view"} for i in some_items], k=5)
    assert session["model"].startswith("behaviour/") and len(session["items"]) == 5
    cold = shop.recommend_session([{"item_id": "never-seen"}], k=5)
    assert cold["model"].startswith("popularity/") and cold["personalised"] is False
    similar = shop.similar_items(some_items[0], k=4)["items"]
    assert len(similar) == 4 and some_items[0] not in {r["item_id"] for r in similar}


def test_the_shop_model_reads_event_types_and_times(trained):
    """The shop's events carry their type and time; the trained model reads them, so a session that
    ends in a purchase is answered differently from one that ends in a view of the same items, and a
    session sent over HTTP with times is answered from them."""
    shop, synthetic, result = trained
    assert shop.registry.card("behaviour", result["behaviour"]["version"])["config"]["calendar"] is True
    items = synthetic.events.filter(pl.col("type") == "view")["item_id"].head(3).to_list()
    t0 = 1_772_600_000_000
    viewed = [{"item_id": i, "type": "view", "ts_ms": t0 + 60_000 * n} for n, i in enumerate(items)]
    bought = viewed[:-1] + [{**viewed[-1], "type": "purchase"}]
    later = viewed[:-1] + [{**viewed[-1], "ts_ms": t0 + 5 * 86_400_000}]
    answers = [shop.recommend_session(events, k=20)["items"] for events in (viewed, bought, later)]
    scores = [[r["score"] for r in answer] for answer in answers]
    assert scores[0] != scores[1] and scores[0] != scores[2]
    key = create_key(shop.store, "sessions", frozenset({Scope.recommend}))
    with TestClient(create_app(shop=shop)) as client:
        ok = client.post("/v1/sessions/recommendations", json={"events": viewed, "k": 20}, headers=auth(key))
        assert ok.status_code == 200 and [r["score"] for r in ok.json()["items"]] == scores[0]
        bad = client.post("/v1/sessions/recommendations", json={"events": [{**viewed[0], "ts_ms": -5}]},
                          headers=auth(key))
        assert bad.status_code == 422 and "ts_ms" in bad.text


def test_promotion_gate_keeps_a_better_champion(trained, monkeypatch):
    shop, _, result = trained
    champion = shop.registry.current_version("behaviour")
    from shopmind.training import pipeline

    # A crippled challenger: one epoch, tiny, heavily regularised, and no item kNN to lean on (a
    # blend can make even this model good: recommend/blend.py).
    real = pipeline.BehaviourRecommender
    monkeypatch.setattr(pipeline, "BehaviourRecommender",
                        lambda **kw: real(d_model=8, max_epochs=1, dropout=0.9, **kw))
    monkeypatch.setattr(pipeline, "attach_blend", lambda model, data, split=None: model)
    again = shop.train(actor="t")
    assert again["behaviour"]["promoted"] is False
    assert again["behaviour"]["challenger_ndcg@10"] < again["behaviour"]["champion_ndcg@10"]
    assert shop.registry.current_version("behaviour") == champion
    assert len(shop.registry.versions("behaviour")) == 2  # kept for inspection, not served


def test_hot_swap_under_load_drops_no_request(trained):
    shop, synthetic, _ = trained
    versions = [c["version"] for c in shop.registry.versions("behaviour")]
    if len(versions) < 2:
        shop.train(actor="t", time_budget_s=2, force_promote=True)
        versions = [c["version"] for c in shop.registry.versions("behaviour")]
    key = create_key(shop.store, "load", frozenset({Scope.recommend}))
    users = synthetic.users["user_id"].head(30).to_list()
    seen_models, failures = set(), []
    stop = threading.Event()
    with TestClient(create_app(shop=shop)) as client:
        def hammer():
            n = 0
            while not stop.is_set():
                r = client.get(f"/v1/users/{users[n % len(users)]}/recommendations?k=5", headers=auth(key))
                n += 1
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    seen_models.add(r.json()["model"])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for n in range(6):
            shop.registry.promote("behaviour", versions[n % 2])
            threading.Event().wait(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert {f"behaviour/{v}" for v in versions[:2]} <= seen_models
    rolled = shop.registry.rollback("behaviour")
    assert shop.registry.current_version("behaviour") == rolled


def test_a_promotion_is_not_answered_from_the_old_versions_cache(trained):
    """A user's cached state and candidates belong to the version that computed them: after another
    version is promoted, the answer is that version's, as computed from scratch."""
    from shopmind.recommend.service import RecommendationService

    shop, synthetic, _ = trained
    versions = [c["version"] for c in shop.registry.versions("behaviour")]
    if len(versions) < 2:
        shop.train(actor="t", time_budget_s=2, force_promote=True)
        versions = [c["version"] for c in shop.registry.versions("behaviour")]
    current = shop.registry.current_version("behaviour")
    other = next(v for v in versions if v != current)
    user, _ = _consenting_user_with_purchase(synthetic)
    pseudonym = shop.pseudonym(user)
    fresh = RecommendationService(shop.registry, shop.items_frame, cache=None)
    history = [tuple(event) for event in shop.recent_items(pseudonym)]
    before = [r["item_id"] for r in shop.recommend(user, k=10)["items"]]
    assert shop.cache.get(STATE, pseudonym) is not None
    try:
        shop.registry.promote("behaviour", other)
        after = shop.recommend(user, k=10)
        scratch = [r["item_id"] for r in fresh.for_history(history, 10, None, shop.purchased_items(pseudonym))["items"]]
        assert scratch != before  # the two versions rank differently, so the check below can tell them apart
        assert after["model"] == f"behaviour/{other}" and [r["item_id"] for r in after["items"]] == scratch
    finally:
        shop.registry.promote("behaviour", current)


def test_cached_answers_equal_fresh_ones(trained):
    """Repeat requests are served from the cached state and candidates; they must equal a computation
    from scratch, with and without a category filter and for a k beyond the cached candidates."""
    from shopmind.recommend.service import CANDIDATES, RecommendationService

    shop, synthetic, _ = trained
    user, _ = _consenting_user_with_purchase(synthetic)
    pseudonym = shop.pseudonym(user)
    fresh = RecommendationService(shop.registry, shop.items_frame, cache=None)
    top = synthetic.items["category"][0].split(" > ")[0]
    for k, category in ((10, None), (5, top), (CANDIDATES + 20, None)):
        shop.recommend(user, k=k, category=category)  # fills the cache
        assert shop.cache.get(STATE, pseudonym) is not None
        cached = shop.recommend(user, k=k, category=category)["items"]
        history = [tuple(event) for event in shop.recent_items(pseudonym)]
        scratch = fresh.for_history(history, k, category, shop.purchased_items(pseudonym))["items"]
        assert [r["item_id"] for r in cached] == [r["item_id"] for r in scratch]
        assert [r["score"] for r in cached] == pytest.approx([r["score"] for r in scratch], abs=1e-5)
    # An answer the background refresh wrote (ranked through StateBatcher.rank_many) equals one too.
    shop.ingest("events", [{"event_id": "refresh-equal-1", "user_id": user, "type": "view",
                            "item_id": scratch[0]["item_id"], "ts": "2026-03-08T10:00:00Z"}], actor="t")
    assert shop.refresher.wait_idle()
    refreshed = shop.cache.get(STATE, pseudonym)
    assert "i" in refreshed
    cached = shop.recommend(user, k=10)["items"]
    assert shop.cache.get(STATE, pseudonym) == refreshed  # served from the refreshed entry
    history = [tuple(event) for event in shop.recent_items(pseudonym)]
    assert history[-1][0] == scratch[0]["item_id"]
    scratch = fresh.for_history(history, 10, None, shop.purchased_items(pseudonym))["items"]
    assert [r["item_id"] for r in cached] == [r["item_id"] for r in scratch]
    assert [r["score"] for r in cached] == pytest.approx([r["score"] for r in scratch], abs=1e-5)


def test_erased_users_leave_the_next_training(trained):
    shop, synthetic, _ = trained
    user, _ = _consenting_user_with_purchase(synthetic)
    pseudonym = shop.pseudonym(user)
    shop.recommend(user, k=5)
    assert shop.cache.get(STATE, pseudonym) is not None
    shop.erase_user(user, actor="t")
    assert shop.cache.get(STATE, pseudonym) is None  # the cached state and candidates go with the user
    for path in shop.registry.root.glob("*/*/subjects.parquet"):
        assert pseudonym not in pl.read_parquet(path)["pseudonym"].to_list()
    result = shop.train(actor="t", time_budget_s=2, force_promote=True)
    lineage = pl.read_parquet(shop.registry.root / "behaviour" / result["behaviour"]["version"] / "subjects.parquet")
    assert pseudonym not in set(lineage["pseudonym"].to_list()) and lineage.height > 100
    cards = shop.registry.versions("behaviour")
    assert all(c["erased_since_training"] >= 1 for c in cards if c["version"] != result["behaviour"]["version"])


def test_risk_engine_sees_how_unusual_an_order_is_for_the_user(trained):
    """The behaviour-model feature of the risk engine: the items the model would rank first for a user
    are usual for them (near 0), the items it ranks last are unusual (near 1)."""
    from shopmind.risk.schemas import RiskEvent

    shop, synthetic, _ = trained
    # a consenting user with some history (the tests above erase the first such user)
    for user in reversed(synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()):
        pseudonym = shop.pseudonym(user)
        history = [tuple(event) for event in shop.recent_items(pseudonym)]
        if len(history) >= 5:
            break
    shop.recommend(user, k=1)  # caches the user's state, which unusualness reuses
    version, model = shop.recommender.behaviour()
    state = _unpack(shop.cache.get(STATE, pseudonym)["s"], np.float32)  # the state recommend computed
    scores = shop.recommender._catalog(version, model).items.scores(state)
    # The model's first and last choice over the whole catalog (a recommendation's best item can rank
    # below history items it hides, which made "best recommended" a flaky stand-in for "most usual").
    best, worst = model.item_ids_[int(np.argmax(scores))], model.item_ids_[int(np.argmin(scores))]
    usual = shop.recommender.unusualness(history, [best], subject=pseudonym)
    unusual = shop.recommender.unusualness(history, [worst], subject=pseudonym)
    assert usual < 0.01 and unusual > 0.99
    order = RiskEvent(event_id="o-risk-1", kind="order", user_id=user, amount=50.0,
                      items=[{"item_id": worst, "price": 50.0}])
    decision = shop.risk.decide(order)
    assert shop.risk.decision(decision.decision_id)["features"]["behaviour_unusual"] > 0.99


def test_unusualness_caches_the_state_it_computes_for_the_users_next_decisions(trained, monkeypatch):
    """A risk decision for a user with no cached state pays a model pass; the state is then kept, so the
    user's next decisions with the same history do not, while a recommendation still computes its own
    candidates, and a changed history computes a new state (what a replay of it would compute). Replays
    (no subject) never read or write the cache."""
    shop, synthetic, _ = trained
    for user in synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()[5:]:
        pseudonym = shop.pseudonym(user)
        history = [tuple(event) for event in shop.recent_items(pseudonym)]
        if len(history) >= 5:
            break
    assert shop.refresher.wait_idle()  # no background refresh (earlier tests' events) runs into the count
    shop.cache.delete(STATE, [pseudonym])
    version, model = shop.recommender.behaviour()
    passes = []
    real = type(model).user_state
    monkeypatch.setattr(model, "user_state", lambda *a, **kw: (passes.append(len(a[0])), real(model, *a, **kw))[1])
    item = model.item_ids_[0]
    first = shop.recommender.unusualness(history, [item], subject=pseudonym)
    assert passes == [1] and set(shop.cache.get(STATE, pseudonym)) == {"v", "w", "s"}
    assert shop.recommender.unusualness(history, [item], subject=pseudonym) == first and passes == [1]
    assert len(shop.recommend(user, k=3)["items"]) == 3 and passes == [1, 1]  # its own pass, not the kept state
    assert "i" in shop.cache.get(STATE, pseudonym)
    assert shop.recommender.unusualness(history, [item], subject=pseudonym) == first and passes == [1, 1]
    shop.recommender.unusualness(history[:-1], [item], subject=pseudonym)  # another history: not that state
    assert passes == [1, 1, 1]
    shop.cache.delete(STATE, [pseudonym])
    shop.recommender.unusualness(history, [item])
    shop.recommender.unusualness(history, [item])
    assert passes == [1, 1, 1, 1, 1] and shop.cache.get(STATE, pseudonym) is None
    # a state planted under this history's key is what a live decision reads, and what a replay ignores
    shop.recommender.unusualness(history, [item], subject=pseudonym)
    planted = dict(shop.cache.get(STATE, pseudonym))
    state = _unpack(planted["s"], np.float32)
    shop.cache.set(STATE, pseudonym, {**planted, "s": _pack(-state)})
    assert shop.recommender.unusualness(history, [item], subject=pseudonym) != first
    assert shop.recommender.unusualness(history, [item]) == first


def test_ingested_events_refresh_the_state_the_users_next_decision_reads(trained, monkeypatch):
    """When a user's events are ingested, their behaviour-model state for the new history is computed in
    the background (recommend/refresh.py): the decision on their order then runs no model pass, and its
    feature is what a pass over the same history gives (a replay, which never reads the cache)."""
    from shopmind.recommend.service import _context, _history_key, _window
    from shopmind.risk.schemas import RiskEvent

    shop, synthetic, _ = trained
    user = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()[-3]
    pseudonym = shop.pseudonym(user)
    version, model = shop.recommender.behaviour()
    assert shop.refresher.wait_idle()
    before = shop.refresher.stats["computed"]
    shop.ingest("events", [{"event_id": "refresh-1", "user_id": user, "type": "add_to_cart",
                            "item_id": model.item_ids_[7], "ts": "2026-03-06T10:00:00Z"}], actor="t")
    assert shop.refresher.wait_idle() and shop.refresher.stats["computed"] == before + 1
    # the refresh cached the list it read (no event changed it meanwhile): the decision reads no table
    assert shop.cache.get(RECENT, pseudonym) is not None
    history = [tuple(e) for e in shop.recent_items(pseudonym)]
    assert history[-1][0] == model.item_ids_[7]
    catalog = shop.recommender._catalog(version, model)
    events = [(catalog.index[i], kind, ts) for i, kind, ts in history if i in catalog.index]
    window, context = _window(model, np.array([i for i, _, _ in events]), _context(model, events))
    entry = shop.cache.get(STATE, pseudonym)
    assert entry["v"] == version and entry["w"] == _history_key(window, context)  # this very history
    passes, event_reads = [], []
    real = type(model).user_state
    monkeypatch.setattr(model, "user_state", lambda *a, **kw: (passes.append(len(a[0])), real(model, *a, **kw))[1])
    read = shop.store.fetch_all
    monkeypatch.setattr(shop.store, "fetch_all",
                        lambda sql, params=(): (event_reads.append(sql) if "FROM events" in sql else None,
                                                read(sql, params))[1])
    decision = shop.risk.decide(RiskEvent(event_id="o-refresh-1", kind="order", user_id=user, amount=30.0,
                                          items=[{"item_id": model.item_ids_[11], "price": 30.0}]))
    assert passes == [] and event_reads == []
    logged = shop.risk.decision(decision.decision_id)["features"]["behaviour_unusual"]
    replayed = shop.recommender.unusualness(history, [model.item_ids_[11]])
    assert passes == [1] and logged == pytest.approx(replayed, abs=1e-6)
    # The refresh computed this consenting user's recommendation candidates too, and cached what they
    # read: the next recommendation is answered from the cache alone (the HTTP fast path), no pass.
    assert "i" in entry and shop.recommend(user, k=5, cached_only=True)["personalised"] and passes == [1]


def test_the_refresh_computes_candidates_only_for_users_who_consented_to_personalisation(trained):
    """For a user without personalization consent, the refresh computes no recommendation candidates
    (their requests get trending items), and the state a risk decision reads only while they have an
    open cart (an order may follow), not on every page they view."""
    shop, synthetic, _ = trained
    version, model = shop.recommender.behaviour()
    refused = synthetic.users.filter(~pl.col("consent_personalization"))["user_id"].to_list()[0]
    pseudonym = shop.pseudonym(refused)
    assert shop.refresher.wait_idle()
    shop.cache.delete(STATE, [pseudonym])

    def event(n: int, kind: str) -> dict:
        return {"event_id": f"refresh-refused-{n}", "user_id": refused, "type": kind,
                "item_id": model.item_ids_[9 + n], "ts": f"2026-03-06T11:0{n}:00Z"}

    from shopmind.risk.service import PROFILE

    shop.risk  # the risk service exists in this process, as in `shopmind serve`
    shop.cache.delete(PROFILE, [pseudonym])
    shop.ingest("events", [event(1, "view")], actor="t")
    assert shop.refresher.wait_idle() and shop.cache.get(STATE, pseudonym) is None
    assert shop.cache.get(PROFILE, pseudonym) is None
    shop.ingest("events", [event(2, "add_to_cart")], actor="t")
    assert shop.refresher.wait_idle()
    entry = shop.cache.get(STATE, pseudonym)
    assert entry is not None and entry["v"] == version and set(entry) == {"v", "w", "s"}
    assert shop.cache.get(PROFILE, pseudonym) is not None  # the order's other read, warmed with it
    assert shop.recommend(refused, k=5)["personalised"] is False
    shop.ingest("events", [event(3, "purchase")], actor="t")  # the cart is closed: no refresh after this
    shop.ingest("events", [event(4, "view")], actor="t")
    assert shop.refresher.wait_idle() and shop.cache.get(STATE, pseudonym)["w"] == entry["w"]


def test_async_decisions_compute_the_behaviour_feature_off_the_event_loop(trained, monkeypatch):
    """The service's async path (the HTTP route's) computes an order's behaviour-model feature in a
    worker thread, not on the event loop, and logs the same value the synchronous path computes."""
    import asyncio

    from shopmind.risk.schemas import RiskEvent

    shop, synthetic, _ = trained
    user = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()[-2]
    version, model = shop.recommender.behaviour()
    engine = shop.risk.engine()
    threads = []
    real = engine.unusualness
    monkeypatch.setattr(engine, "unusualness", lambda *a: (threads.append(threading.current_thread()), real(*a))[1])

    def order(n: int) -> RiskEvent:
        return RiskEvent(event_id=f"o-async-{n}", kind="order", user_id=user, amount=20.0,
                         items=[{"item_id": model.item_ids_[3], "price": 20.0}])

    sync = shop.risk.decide(order(1))
    assert threads == [threading.main_thread()]
    via_loop = asyncio.run(shop.risk.decide_async(order(2)))
    assert len(threads) == 2 and threads[1] is not threading.main_thread()
    logged = [shop.risk.decision(d.decision_id)["features"]["behaviour_unusual"] for d in (sync, via_loop)]
    assert logged[0] is not None and logged[0] == logged[1]


def test_a_cache_failure_drops_the_behaviour_feature_not_the_decision(trained, monkeypatch):
    """When the cache fails on a behaviour state (Redis unreachable), the order is still decided, without
    the feature. (Only the states fail here: the engine's other cache reads are not this test's subject.)"""
    import math

    from shopmind.exceptions import StorageError
    from shopmind.risk.schemas import RiskEvent

    shop, synthetic, _ = trained
    user = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()[-3]
    version, model = shop.recommender.behaviour()

    cache = shop.recommender._cache
    real_get = cache.get

    def down(namespace, *args, **kwargs):
        if namespace == STATE:
            raise StorageError("cache unreachable")
        return real_get(namespace, *args, **kwargs)

    monkeypatch.setattr(cache, "get", down)
    decision = shop.risk.decide(RiskEvent(event_id="o-cache-down", kind="order", user_id=user, amount=20.0,
                                          items=[{"item_id": model.item_ids_[5], "price": 20.0}]))
    logged = shop.risk.decision(decision.decision_id)["features"]["behaviour_unusual"]
    assert decision.decision in ("allow", "review", "block", "freeze_account")
    assert logged is None or math.isnan(logged)


def test_http_fast_path_answers_repeat_visitors_exactly_as_the_route(trained, monkeypatch):
    """GET recommendations is answered on the event loop from the cache (api/fast_routes.py) when it
    can be, and by the FastAPI route otherwise. Both must give the same bodies and the same errors,
    and a cache miss (first visit, new event, new category, consent withdrawn) must reach the route."""
    shop, synthetic, _ = trained
    consenting = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()
    # a user from the middle: the tests around this one take the first and the last such users
    active = [u for u in consenting if len(shop.recent_items(shop.pseudonym(u))) >= 5]
    user = active[len(active) // 2]
    key = create_key(shop.store, "fast", frozenset({Scope.recommend}))
    other = create_key(shop.store, "ingest-only", frozenset({Scope.ingest}))
    calls: list[tuple[bool, str]] = []  # (cached_only, outcome) of every Shop.recommend call
    real = shop.recommend

    def spy(*args, **kwargs):
        try:
            answer = real(*args, **kwargs)
        except Exception as exc:
            calls.append((kwargs.get("cached_only", False), type(exc).__name__))
            raise
        calls.append((kwargs.get("cached_only", False), "answered"))
        return answer

    monkeypatch.setattr(shop, "recommend", spy)
    url = f"/v1/users/{user}/recommendations"
    with TestClient(create_app(shop=shop)) as client:
        shop.cache.delete("state", [shop.pseudonym(user)])
        first = client.get(url, params={"k": 7}, headers=auth(key))
        assert first.status_code == 200 and calls == [(True, "CacheMiss"), (False, "answered")]
        calls.clear()
        again = client.get(url, params={"k": 7}, headers=auth(key))
        assert calls == [(True, "answered")]  # the fast path, and nothing else
        assert again.json() == first.json() and again.json()["personalised"]
        assert again.headers["content-type"] == "application/json"
        # A category never asked before computes its item mask in the route, then answers fast (k=1 in
        # the category of the best candidate: no scan beyond the cached candidates is needed).
        categories = _categories(synthetic)
        top = categories[again.json()["items"][0]["item_id"]].split(" > ")[0]
        calls.clear()
        routed = client.get(url, params={"k": 1, "category": top}, headers=auth(key)).json()
        fast = client.get(url, params={"k": 1, "category": top}, headers=auth(key)).json()
        assert calls == [(True, "CacheMiss"), (False, "answered"), (True, "answered")] and routed == fast
        # Errors come from the route, unchanged: bad query, missing key, wrong scope.
        calls.clear()
        bad = client.get(url, params={"k": 0}, headers=auth(key))
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.k"
        assert client.get(url).status_code == 401
        assert client.get(url, headers=auth(other)).status_code == 403
        assert calls == []
        # A new event changes the fingerprint; the background refresh (recommend/refresh.py) computes the
        # new history's candidates, so the next request is answered by the fast path at once.
        bought = again.json()["items"][0]["item_id"]
        shop.ingest("events", [{"event_id": "fast-path-1", "user_id": user, "type": "view", "item_id": bought,
                                "ts": "2026-03-05T10:00:00Z"}], actor="t")
        assert shop.refresher.wait_idle()
        calls.clear()
        after = client.get(url, params={"k": 7}, headers=auth(key)).json()
        assert calls == [(True, "answered")]
        assert bought not in [r["item_id"] for r in after["items"]] or \
            dict(zip(synthetic.items["item_id"], synthetic.items["consumable"]))[bought]
        # Withdrawn consent: the cached answer is never used again.
        shop.set_consent(user, {"personalization": False}, actor="t")
        calls.clear()
        withdrawn = client.get(url, params={"k": 7}, headers=auth(key)).json()
        assert withdrawn["personalised"] is False and calls[0] == (True, "CacheMiss")
        shop.set_consent(user, {"personalization": True}, actor="t")


def test_a_blended_model_is_served_with_the_blends_ranking(trained):
    """When training keeps a blend with item kNN (recommend/blend.py), a user's answer is the blend's
    top k: every item the blend scores higher is one the user cannot be offered (history or bought);
    filters and sessions keep working. Runs last: it promotes a new version."""
    from shopmind.recommend.blend import attach_blend
    from shopmind.recommend.service import _context, _window
    from shopmind.evaluation import Sequences
    from shopmind.training.pipeline import shop_sequences

    shop, synthetic, _ = trained
    _, model = shop.registry.load_current("behaviour")
    today, subjects = shop_sequences(shop.training_events("personalization"))
    # In the model's vocabulary: today's first-appearance order can differ from the one it was trained
    # on (the erasure test above may have removed an item's first appearance; pseudonyms, and so the
    # order of users, differ from run to run).
    index = {item: n for n, item in enumerate(model.item_ids_)}
    keep = [np.array([today.item_ids[i] in index for i in s], dtype=bool) for s in today.sequences]
    seqs = Sequences(user_ids=today.user_ids, item_ids=list(model.item_ids_),
                     sequences=[np.array([index[today.item_ids[i]] for i in s[k]], dtype=np.int64)
                                for s, k in zip(today.sequences, keep)],
                     context=None if today.context is None else [c[k] for c, k in zip(today.context, keep)])
    attach_blend(model, seqs, kinds=("z",), weights=(1.0,))  # forced on: validation may prefer less
    version = shop.registry.register("behaviour", model, card={"test": "blend"}, subjects=subjects)
    loaded = shop.registry.load_current("behaviour")
    assert loaded[0] == version and loaded[1].blend_ is not None

    consenting = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()
    active = [u for u in consenting if len(shop.recent_items(shop.pseudonym(u))) >= 5]
    user = active[len(active) // 3]  # the erasure test above took the first such user
    answer = shop.recommend(user, k=8)
    assert answer["model"] == f"behaviour/{version}" and len(answer["items"]) == 8, answer
    index = {item: n for n, item in enumerate(model.item_ids_)}
    known = [(index[i], kind, ts) for i, kind, ts in shop.recent_items(shop.pseudonym(user)) if i in index]
    indices = np.array([i for i, _, _ in known], dtype=np.int64)
    window, context = _window(model, indices, _context(model, known))
    offline = model.score([window], None if context is None else [context])[0]
    served = [index[r["item_id"]] for r in answer["items"]]
    np.testing.assert_allclose([r["score"] for r in answer["items"]], offline[served], atol=1e-4)
    bought = set(synthetic.events.filter((pl.col("user_id") == user) & (pl.col("type") == "purchase"))["item_id"])
    unofferable = set(indices.tolist()) | {index[i] for i in bought if i in index}
    better = set(np.flatnonzero(offline > min(offline[served]) + 1e-4).tolist()) - set(served)
    assert better <= unofferable, better - unofferable

    top = synthetic.items["category"][0].split(" > ")[0]
    filtered = shop.recommend(user, k=5, category=top)["items"]
    assert filtered and all(_categories(synthetic)[r["item_id"]].startswith(top) for r in filtered)
    some_items = synthetic.events.filter(pl.col("type") == "view")["item_id"].head(3).to_list()
    assert len(shop.recommend_session([{"item_id": i, "type": "view"} for i in some_items], k=5)["items"]) == 5


def test_an_erasure_during_a_refresh_leaves_nothing_cached_about_the_user(trained, monkeypatch):
    """A refresh that read the user's events before their erasure finishes after it: what it wrote is
    removed (state, candidates, and any other cached list), and the user is not refreshed again. After
    the blend test: an erasure changes the training data that test rebuilds."""
    import threading as _threading

    shop, synthetic, _ = trained
    user = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()[-6]
    pseudonym = shop.pseudonym(user)
    version, model = shop.recommender.behaviour()
    assert shop.refresher.wait_idle()
    reading, erased = _threading.Event(), _threading.Event()
    real = shop.recommender.refresh

    def slow_refresh(users):  # the events were read; the erasure runs before anything is written
        reading.set()
        assert erased.wait(10)
        return real(users)

    monkeypatch.setattr(shop.recommender, "refresh", slow_refresh)
    shop.ingest("events", [{"event_id": "refresh-erased-1", "user_id": user, "type": "view",
                            "item_id": model.item_ids_[4], "ts": "2026-03-06T12:00:00Z"}], actor="t")
    assert reading.wait(10)
    shop.erase_user(user, actor="t")
    erased.set()
    assert shop.refresher.wait_idle()
    assert shop.cache.find(pseudonym) == [] and shop.refresher.stats["discarded"] >= 1
    shop.refresher.submit([pseudonym])  # e.g. a late event: the erased user is not refreshed
    assert shop.refresher.wait_idle() and shop.cache.find(pseudonym) == []


def test_a_restart_warms_the_states_of_recently_active_users(trained, monkeypatch):
    """`warm_states` (run when the server starts) queues the background refresh for the users with events
    in the last `warm_states_days` before the newest event, most recent first, so their first order after a
    restart finds its state cached; the refresh's own rules (consent, open cart) then apply."""
    shop, synthetic, _ = trained
    assert shop.refresher.wait_idle()
    rows = shop.store.fetch_all("SELECT user_pseudonym, MAX(ts_ms) FROM events WHERE user_pseudonym IS NOT NULL "
                                "GROUP BY user_pseudonym")
    last = dict(rows)
    newest = max(last.values())
    expected = {p for p, t in last.items() if t >= newest - 3 * 86_400_000}
    assert 0 < len(expected) < len(last)  # a 20-day shop: some users were not active in its last 3 days
    monkeypatch.setattr(shop, "settings", shop.settings.model_copy(update={"warm_states_days": 3.0}))
    submitted: list[str] = []
    real_submit = shop.refresher.submit
    monkeypatch.setattr(shop.refresher, "submit", submitted.extend)
    assert shop.warm_states() == len(submitted) and set(submitted) == expected
    assert [last[p] for p in submitted] == sorted((last[p] for p in submitted), reverse=True)
    # for real: a consenting user active in the window, whose cached state is gone (as after a restart)
    consenting = {shop.pseudonym(u) for u in synthetic.users.filter(pl.col("consent_personalization"))["user_id"]}
    pseudonym = next(p for p in submitted if p in consenting)
    shop.cache.delete(STATE, [pseudonym])
    monkeypatch.setattr(shop.refresher, "submit", real_submit)
    shop.warm_states()
    assert shop.refresher.wait_idle() and shop.cache.get(STATE, pseudonym) is not None
    monkeypatch.setattr(shop, "settings", shop.settings.model_copy(update={"warm_states_days": 0.0}))
    assert shop.warm_states() == 0


def test_served_history_holds_the_event_types_training_reads(tmp_path):
    """Ad impressions and cart removals entered the served history (read from the database and appended
    on ingest), though training never reads them: an item merely shown was hidden from the user's
    recommendations and cited as "because you viewed". Session recommendations drop them too."""
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'shopmind.db'}")
    try:
        def events(rows):
            shop.ingest("events", [{"event_id": f"e-{kind}-{item}", "user_id": "u1", "type": kind, "item_id": item,
                                    "ts": f"2026-03-0{day}T10:00:00Z"} for day, kind, item in rows], actor="t")

        events([(1, "view", "i1"), (2, "ad_impression", "i2"), (3, "remove_from_cart", "i1"), (4, "click", "i3")])
        pseudonym = shop.pseudonym("u1")
        assert [(item, kind) for item, kind, _ in shop.recent_items(pseudonym)] == [("i1", "view"), ("i3", "click")]
        events([(5, "ad_impression", "i4"), (6, "add_to_cart", "i5")])  # appended to the cached list
        assert [(item, kind) for item, kind, _ in shop.recent_items(pseudonym, cached_only=True)] == [
            ("i1", "view"), ("i3", "click"), ("i5", "add_to_cart")]
    finally:
        shop.close()


def test_the_trending_fallback_excludes_bought_durables_not_consumables(tmp_path, database_url):
    """With no behaviour answer (a shop too small for the model) the fallback excluded everything the
    user bought, consumables included; the behaviour path and the docs keep consumables."""
    shop = make_shop(tmp_path / "home", database_url)
    try:
        shop.ingest("items", [{"item_id": "coffee", "title": "Coffee beans", "category": "Grocery", "consumable": True},
                              {"item_id": "tea", "title": "Tea", "category": "Grocery", "consumable": True},
                              {"item_id": "mug", "title": "Mug", "category": "Home"}], actor="t")
        shop.ingest("users", [{"user_id": f"u{i}", "consent_personalization": True} for i in range(5)], actor="t")
        shop.ingest("events", [{"event_id": f"e{i}-{item}", "user_id": f"u{i}", "type": "purchase", "item_id": item,
                                "ts": f"2026-01-05T10:{i:02d}:00Z"} for i in range(5) for item in ("coffee", "tea", "mug")],
                    actor="t")
        assert "skipped" in shop.train(actor="t", time_budget_s=2)["behaviour"]
        answer = shop.recommend("u0", k=10)
        assert answer["model"].startswith("popularity/")
        assert sorted(r["item_id"] for r in answer["items"]) == ["coffee", "tea"]
    finally:
        shop.close()


def test_category_masks_are_kept_only_for_categories_the_catalog_holds(trained):
    """Every category a request named kept a mask of the catalog's length (up to 10,000 of them):
    random names from clients could hold gigabytes on a large catalog."""
    shop, synthetic, _ = trained
    catalog = shop.recommender.build_catalog(shop.registry.load_current("behaviour")[1])
    for n in range(200):
        assert not catalog.allowed(f"no such category {n}").any()
    assert catalog._masks == {}
    real = synthetic.items["category"][0].split(" > ")[0]
    assert catalog.allowed(real).any() and list(catalog._masks) == [real]


@pytest.mark.parametrize("cache", ["memory", "redis"])
def test_a_resent_batch_leaves_the_cached_history_as_the_database_holds_it(tmp_path, cache, request):
    """Rows the database refused as duplicates were appended to the cached lists all the same: a
    retried batch served each event twice, an id resent with another item served an event never stored.
    (Redis through the suite's fixture, under a prefix of its own: CI fails rather than skips without it.)"""
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    cache_url = "memory://" if cache == "memory" else request.getfixturevalue("redis_url")
    shop, _ = Shop.init(load_settings(home=tmp_path / "home", cache_url=cache_url))
    try:
        batch = [{"event_id": "e1", "user_id": "u1", "type": "view", "item_id": "i1", "ts": "2026-03-01T10:00:00Z"}]
        shop.ingest("events", batch, actor="t")
        pseudonym = shop.pseudonym("u1")
        shop.recent_items(pseudonym), shop.purchased_items(pseudonym)  # cached, as serving does
        shop.ingest("events", batch, actor="t")  # a retry
        shop.ingest("events", [{**batch[0], "type": "purchase", "item_id": "i9"}], actor="t")  # same id, other payload
        assert [item for item, *_ in shop.recent_items(pseudonym)] == ["i1"]
        assert not shop.purchased_items(pseudonym)  # the resent id's purchase was never stored
    finally:
        shop.close()


def test_reasons_read_as_sentences():
    """"you added to your cart this before" (found by a user review): each verb places its item."""
    from types import SimpleNamespace

    from shopmind.recommend.service import RecommendationService

    catalog = SimpleNamespace(titles=["Vitamin C Serum", "Night Cream"], categories=["Beauty > Skin"] * 2)
    reason = RecommendationService._reason
    assert reason(catalog, 0, [(0, "add_to_cart")], 0, 0.9) == "you added this to your cart before"
    assert reason(catalog, 1, [(0, "add_to_cart")], 0, 0.9) == "because you added Vitamin C Serum to your cart"
    assert reason(catalog, 1, [(0, "view")], 0, 0.9) == "because you viewed Vitamin C Serum"
    assert reason(catalog, 1, [(0, "ad_click")], 0, 0.9) == "because you clicked on Vitamin C Serum"
    assert reason(catalog, 1, [(0, "view")], 0, 0.01) == "matches your recent activity; popular in Beauty"


def test_a_category_filter_matches_whole_path_segments():
    """"Home" is Home and what lies under it, not "Homeware" (a bare prefix match passed: the filter test
    checked results with startswith itself; found by a mutation review)."""
    from shopmind.recommend.service import Catalog

    catalog = Catalog(titles=["a", "b", "c", "d"], categories=["Home", "Home > Kitchen", "Homeware", "Garden"],
                      consumable=np.zeros(4, dtype=bool), index={}, items=None)
    assert catalog.allowed("Home").tolist() == [True, True, False, False]
    assert catalog.allowed("Home > Kitchen").tolist() == [False, True, False, False]


def test_bought_consumables_stay_recommendable_and_durables_do_not():
    """People restock consumables: only durables (bought or in the recent history) are hidden. With the
    fixed seed, the end-to-end test only ever drew a durable, so hiding consumables too passed."""
    from types import SimpleNamespace

    from shopmind.recommend.service import Catalog, RecommendationService

    catalog = Catalog(titles=["soap", "kettle", "tea"], categories=["Home"] * 3,
                      consumable=np.array([True, False, True]), index={"soap": 0, "kettle": 1, "tea": 2}, items=None)
    model = SimpleNamespace(reads_context=False)
    _, _, _, hidden = RecommendationService._inputs(None, catalog, model, [("tea", "view", None)], {"soap", "kettle"})
    assert hidden == [1]


def test_a_cached_state_of_another_model_version_is_not_reused_for_the_risk_feature(trained):
    """The trunk state cached for a user is reused only for the live version and the same history: a state
    from before a promotion, scored against the new version's items, passed every test (found by a
    mutation review: only the recommendation path's cache was tested across versions)."""
    from shopmind.recommend.service import STATE

    shop, synthetic, _ = trained
    version, model = shop.recommender.behaviour()
    catalog = shop.recommender._catalog(version, model)
    # a user the module's earlier tests left with a history of catalog items (some erase users)
    pseudonym, history = next((p, h) for p in map(shop.pseudonym, synthetic.users["user_id"].to_list())
                              if (h := [tuple(e) for e in shop.recent_items(p)])
                              and any(item in catalog.index for item, _, _ in h))
    shop.cache.delete(STATE, [pseudonym])
    _, misses = shop.recommender._states(version, model, catalog, [(history, pseudonym)])
    _, again = shop.recommender._states(version, model, catalog, [(history, pseudonym)])
    assert (misses, again) == (1, 0)  # computed, then cached for this version and history
    entry = shop.cache.get(STATE, pseudonym)
    shop.cache.set(STATE, pseudonym, {**entry, "v": "v19990101-000000-1"})  # as an older version left it
    _, stale = shop.recommender._states(version, model, catalog, [(history, pseudonym)])
    assert stale == 1
