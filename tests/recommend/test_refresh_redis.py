"""The background refresh against Redis (the cache several API processes share): what it writes is the
entry a decision and a recommendation read, and an erasure that lands during a refresh leaves nothing
under the user's pseudonym in Redis."""

from __future__ import annotations

import threading

import polars as pl

from shopmind.recommend.service import STATE
from shopmind.synth import generate_shop, write_shop
from tests.conftest import make_shop


def test_refresh_and_erasure_through_redis(tmp_path, redis_url, monkeypatch):
    synthetic = generate_shop(n_users=200, days=10, seed=5)
    paths = write_shop(synthetic, tmp_path / "data", "parquet")
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}", cache_url=redis_url)
    try:
        for kind in ("items", "users", "events"):
            shop.import_file(paths[kind], kind, actor="t")
        assert shop.train(actor="t", time_budget_s=4)["behaviour"]["promoted"]
        version, model = shop.recommender.behaviour()
        consenting = synthetic.users.filter(pl.col("consent_personalization"))["user_id"].to_list()
        kept, erased = consenting[0], consenting[1]

        def cart(user: str, n: int) -> dict:
            return {"event_id": f"redis-cart-{n}", "user_id": user, "type": "add_to_cart",
                    "item_id": model.item_ids_[n], "ts": "2026-03-07T10:00:00Z"}

        shop.ingest("events", [cart(kept, 1)], actor="t")
        assert shop.refresher.wait_idle()
        entry = shop.cache.get(STATE, shop.pseudonym(kept))
        assert entry["v"] == version and {"w", "s", "i", "h"} <= set(entry)  # state and candidates
        passes = []
        real = type(model).user_state
        monkeypatch.setattr(model, "user_state", lambda *a, **kw: (passes.append(1), real(model, *a, **kw))[1])
        assert shop.recommend(kept, k=5)["personalised"] and passes == []  # read from Redis, no pass

        reading, done = threading.Event(), threading.Event()
        refresh = shop.recommender.refresh

        def slow(users):
            reading.set()
            assert done.wait(10)
            return refresh(users)

        monkeypatch.setattr(shop.recommender, "refresh", slow)
        shop.ingest("events", [cart(erased, 2)], actor="t")
        assert reading.wait(10)
        pseudonym = shop.pseudonym(erased)
        shop.erase_user(erased, actor="t")
        done.set()
        assert shop.refresher.wait_idle()
        assert shop.cache.find(pseudonym) == [] and shop.refresher.stats["discarded"] == 1
    finally:
        shop.close()
