"""Replays give an order the behaviour-model feature only from a version trained before it: a version
that saw the order (its purchase and everything after) would make the replayed order look more usual
than it looked live, and the risk model would learn from that."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from shopmind.events.schemas import BEHAVIOUR_EVENT_TYPES
from shopmind.risk.backtest import as_of_unusualness, behaviour_versions_as_of
from shopmind.risk.training import replay_as_of_time, replay_history
from shopmind.storage import schema
from shopmind.synth import generate_shop, write_shop
from shopmind.training.pipeline import train_behaviour_as_of
from tests.conftest import make_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("as_of")
    paths = write_shop(generate_shop(n_users=400, days=30, seed=3), root / "data", "parquet")
    shop = make_shop(root / "home", f"sqlite:///{root / 'db.sqlite'}")
    for kind in ("items", "users", "events", "orders", "payments"):
        shop.import_file(paths[kind], kind, actor="t")
    yield shop
    shop.close()


def _logged_orders(shop) -> dict[str, float | None]:
    d = schema.risk_decisions
    with shop.store.transaction() as conn:
        rows = conn.execute(select(d.c.event_id, d.c.features).where(d.c.kind == "order")).all()
    return {e: json.loads(f)["behaviour_unusual"] for e, f in rows}


def test_a_model_that_saw_the_orders_gives_them_no_feature_and_one_trained_before_does(shop):
    shop.train(actor="t", time_budget_s=3)  # the live model: trained on every event, the orders' included
    live = shop.registry.current_version("behaviour")
    assert behaviour_versions_as_of(shop.registry)[-1][1] == live
    before = replay_history(shop)
    assert before["behaviour_feature"] == 0 and before["no_behaviour_version_before"] > 100
    assert all(v is None for v in _logged_orders(shop).values())  # logged as unknown, not as today's guess

    # A version trained on the events before the first third of the orders and payments: later orders get
    # the feature from it, earlier ones still have none.
    until = replay_as_of_time(shop)
    trained = train_behaviour_as_of(shop, until, "t", time_budget_s=3)
    assert trained["data_window_ms"][1] < until and shop.registry.current_version("behaviour") == live  # not promoted
    unusual = as_of_unusualness(shop)
    with shop.store.transaction() as conn:
        orders = conn.execute(select(schema.orders.c.order_id, schema.orders.c.user_pseudonym, schema.orders.c.ts_ms,
                                     schema.orders.c["items"]).order_by(schema.orders.c.ts_ms)).all()
    from shopmind.risk.schemas import RiskEvent

    early = [o for o in orders if o.ts_ms <= trained["data_window_ms"][1]]
    late = [o for o in orders if o.ts_ms > trained["data_window_ms"][1] and o.user_pseudonym]
    assert early and late

    def event(o):
        return RiskEvent(event_id=f"order:{o.order_id}", kind="order", ts_ms=o.ts_ms, amount=10.0,
                         items=[{"item_id": str(i["item_id"]), "price": 1.0} for i in json.loads(o.items)])

    def has_history(o) -> bool:
        times = unusual.by_user.get(o.user_pseudonym, ([], []))[0]
        return bool(times) and times[0] < o.ts_ms

    early_with_history = [o for o in early if o.user_pseudonym and has_history(o)]
    assert early_with_history  # so the None below is for want of a model, not of history
    assert unusual(early_with_history[0].user_pseudonym, event(early_with_history[0])) is None
    # a late order's feature is the as-of version's, from the user's events before the order only
    model = shop.registry.load_version("behaviour", trained["version"])
    catalog = shop.recommender.build_catalog(model)
    checked = differs = 0
    for o in late[:40]:
        e = schema.events
        with shop.store.transaction() as conn:
            history = [tuple(r) for r in conn.execute(
                select(e.c.item_id, e.c.type, e.c.ts_ms).where(e.c.user_pseudonym == o.user_pseudonym,
                                                              e.c.item_id.is_not(None), e.c.ts_ms < o.ts_ms,
                                                              e.c.type.in_(BEHAVIOUR_EVENT_TYPES))
                .order_by(e.c.ts_ms, e.c.event_id))][-51:]  # what live serving reads (Shop.recent_items)
        got = unusual(o.user_pseudonym, event(o))
        if not history:
            assert got is None
            continue
        expected = shop.recommender.unusualness(history, [it.item_id for it in event(o).items],
                                                version=(trained["version"], model, catalog))
        assert got == pytest.approx(expected, abs=1e-9)
        checked += 1
        differs += abs(shop.recommender.unusualness(history, [it.item_id for it in event(o).items]) - got) > 1e-6
    assert checked >= 10 and differs >= checked // 2  # the live model answers otherwise: it is not asked

    # a backtest counts the reported orders only, and some of them have the feature now
    from shopmind.risk.backtest import backtest

    report = backtest(shop, since_ms=until)
    assert report["behaviour_feature"] > 0
    assert report["behaviour_feature"] + report["no_behaviour_version_before"] <= report["events"]


def test_no_as_of_model_is_trained_without_dp_for_a_shop_that_serves_a_dp_model(shop, monkeypatch):
    from shopmind.exceptions import InvalidInputError
    from shopmind.training.pipeline import as_of_training_refused

    _, serving = shop.registry.load_current("behaviour")
    monkeypatch.setattr(serving, "privacy_", {"epsilon": 8.0}, raising=False)
    assert "differentially private" in as_of_training_refused(shop)
    with pytest.raises(InvalidInputError, match="differentially private"):
        train_behaviour_as_of(shop, replay_as_of_time(shop), "t", time_budget_s=1)


def test_replay_cli_trains_the_as_of_model_once_and_only_while_a_behaviour_model_serves(tmp_path, monkeypatch):
    from shopmind.cli.main import app

    paths = write_shop(generate_shop(n_users=300, days=20, seed=5), tmp_path / "data", "parquet")
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}")
    for kind in ("items", "users", "events", "orders", "payments"):
        shop.import_file(paths[kind], kind, actor="t")
    monkeypatch.setenv("SHOPMIND_HOME", str(shop.settings.home))
    monkeypatch.setenv("SHOPMIND_DATABASE_URL", shop.settings.database_url)
    runner = CliRunner()
    bad = runner.invoke(app, ["risk", "replay", "--behaviour-as-of", "last tuesday"])
    assert bad.exit_code == 2 and "--behaviour-as-of" in bad.output
    assert shop.store.count("risk_decisions") == 0  # refused before any work
    # no behaviour model serves: live decisions have no behaviour feature, so replays give none either
    auto = ["risk", "replay", "--behaviour-as-of", "auto", "--behaviour-budget", "2"]
    none = runner.invoke(app, auto)
    assert none.exit_code == 0, none.output
    out = json.loads(none.stdout)
    assert "no behaviour model serves" in out["behaviour_trained_as_of"]["skipped"] and out["behaviour_feature"] == 0
    assert shop.registry.versions("behaviour") == [] and as_of_unusualness(shop) is None

    shop.train(actor="t", time_budget_s=2)
    until = replay_as_of_time(shop)
    first = runner.invoke(app, auto)
    assert first.exit_code == 0, first.output
    trained = json.loads(first.stdout)["behaviour_trained_as_of"]
    assert trained["as_of_ms"] == until and not trained["promoted"] and trained["data_window_ms"][1] < until
    assert len(shop.registry.versions("behaviour")) == 2
    again = runner.invoke(app, auto)  # a version predates the auto time now: nothing to train
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["behaviour_trained_as_of"] is None
    assert len(shop.registry.versions("behaviour")) == 2
    shop.close()


def test_replay_histories_hold_what_live_serving_reads(tmp_path):
    """The replayed feature read every item event (ad impressions and cart removals included) with ties
    in no set order; live serving reads the model's event types, ties in event-id order."""
    from shopmind.risk.backtest import AsOfUnusualness

    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}")
    shop.ingest("events", [{"event_id": f"e{n}", "user_id": "u1", "type": kind, "item_id": item,
                            "ts": "2026-03-01T10:00:00Z" if n < 3 else "2026-03-02T10:00:00Z"}
                           for n, (kind, item) in enumerate([("view", "i2"), ("view", "i1"), ("ad_impression", "i9"),
                                                             ("remove_from_cart", "i2"), ("click", "i3")])], actor="t")
    replayed = [(item, kind) for item, kind, _ in AsOfUnusualness(shop, []).by_user[shop.pseudonym("u1")][1]]
    assert replayed == [(item, kind) for item, kind, _ in shop.recent_items(shop.pseudonym("u1"))]
    assert replayed == [("i2", "view"), ("i1", "view"), ("i3", "click")]
    shop.close()
