"""Tests for the synthetic shop generator: contracts, realism and learnability."""

from __future__ import annotations

import json
from functools import partial
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from shopmind.synth import TOP_CATEGORIES, ShopConfig, SyntheticShop, generate_shop, stream_shop, write_shop
from shopmind.synth import population

SMALL = {"n_users": 1500, "days": 30}
SEED = 3
TABLES = ("items", "users", "events", "orders", "payments", "truth")
UTC_DT = pl.Datetime("us", "UTC")

SCHEMAS = {
    "items": {"item_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "category": pl.Utf8, "brand": pl.Utf8,
              "price": pl.Float64, "currency": pl.Utf8, "stock": pl.Int64, "attributes": pl.Utf8,
              "consumable": pl.Boolean},
    "users": {"user_id": pl.Utf8, "email": pl.Utf8, "phone": pl.Utf8, "address": pl.Utf8, "country": pl.Utf8,
              "age_band": pl.Utf8, "consent_personalization": pl.Boolean, "consent_advertising": pl.Boolean,
              "consent_analytics": pl.Boolean, "signup_ts": UTC_DT},
    "events": {"event_id": pl.Utf8, "user_id": pl.Utf8, "session_id": pl.Utf8, "type": pl.Utf8, "item_id": pl.Utf8,
               "query": pl.Utf8, "price": pl.Float64, "quantity": pl.Int64, "rating": pl.Float64,
               "device": pl.Utf8, "country": pl.Utf8, "ts": UTC_DT, "ad_id": pl.Utf8, "campaign_id": pl.Utf8,
               "converted": pl.Boolean},
    "orders": {"order_id": pl.Utf8, "user_id": pl.Utf8, "ts": UTC_DT, "amount": pl.Float64, "currency": pl.Utf8,
               "items": pl.Utf8, "shipping_country": pl.Utf8, "ip_country": pl.Utf8, "device_id": pl.Utf8,
               "payment_instrument": pl.Utf8, "label_fraud": pl.Boolean, "fraud_pattern": pl.Utf8},
    "payments": {"payment_id": pl.Utf8, "order_id": pl.Utf8, "user_id": pl.Utf8, "ts": UTC_DT,
                 "amount": pl.Float64, "currency": pl.Utf8, "payment_instrument": pl.Utf8, "method": pl.Utf8,
                 "status": pl.Utf8, "label_fraud": pl.Boolean, "fraud_pattern": pl.Utf8},
    "truth": {"user_id": pl.Utf8, "favourite_category": pl.Utf8, "taste": pl.List(pl.Float32),
              "drift_to": pl.Utf8, "is_fraudster": pl.Boolean},
}
EVENT_TYPES = {"view", "search", "click", "add_to_cart", "remove_from_cart", "purchase", "rating",
               "ad_impression", "ad_click"}
ORDER_LINE = pl.List(pl.Struct({"item_id": pl.Utf8, "quantity": pl.Int64, "price": pl.Float64}))


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return generate_shop(**SMALL, seed=SEED)


def _top(items: pl.DataFrame) -> pl.DataFrame:
    """item_id -> top-level category."""
    return items.select("item_id", top=pl.col("category").str.split(" > ").list.first())


def _order_lines(orders: pl.DataFrame) -> pl.DataFrame:
    return (orders.with_columns(line=pl.col("items").str.json_decode(ORDER_LINE)).explode("line")
            .unnest("line"))


# 1. Determinism ---------------------------------------------------------------------------

def test_same_seed_gives_identical_frames(shop: SyntheticShop) -> None:
    again = generate_shop(ShopConfig(**SMALL, seed=SEED))
    for name in TABLES:
        assert_frame_equal(getattr(shop, name), getattr(again, name))


def test_different_seed_gives_different_data(shop: SyntheticShop) -> None:
    other = generate_shop(**SMALL, seed=SEED + 1)
    for name in ("items", "users", "events", "orders"):
        assert not getattr(other, name).equals(getattr(shop, name)), name


def test_overrides_and_default_catalog_size() -> None:
    base = ShopConfig(n_users=1000, days=3)
    small = generate_shop(base, days=2, seed=9)
    assert small.config.days == 2 and small.config.seed == 9 and base.days == 3
    assert small.items.height == 500  # max(500, n_users // 5)
    assert small.users.height == 1000
    for bad in ({"n_users": 0}, {"days": 0}, {"n_items": 10}, {"fraud_share": 0.9},
                {"start": ShopConfig().start.replace(tzinfo=None)}):
        with pytest.raises(ValueError):
            generate_shop(**bad)


# 2. Contracts -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", TABLES)
def test_column_contracts(shop: SyntheticShop, name: str) -> None:
    assert dict(getattr(shop, name).schema) == SCHEMAS[name]


def test_event_invariants(shop: SyntheticShop) -> None:
    ev = shop.events
    cfg = shop.config
    assert ev["event_id"].n_unique() == ev.height
    assert ev["ts"].is_sorted()
    assert set(ev["type"].unique()) == EVENT_TYPES
    assert ev["session_id"].null_count() == 0
    assert ev["ts"].min() >= cfg.start and ev["ts"].max() < cfg.start + timedelta(days=cfg.days)
    t = pl.col("type")
    rules = {
        "item_id set unless search": (t == "search") == pl.col("item_id").is_null(),
        "query only for search": (t == "search") == pl.col("query").is_not_null(),
        "price/quantity for cart and purchase": t.is_in(["add_to_cart", "remove_from_cart", "purchase"])
        == (pl.col("price").is_not_null() & pl.col("quantity").is_not_null()),
        "rating only for rating": (t == "rating") == pl.col("rating").is_between(1, 5),
        "ad ids only for ad events": t.is_in(["ad_impression", "ad_click"])
        == (pl.col("ad_id").is_not_null() & pl.col("campaign_id").is_not_null()),
        "converted only for ad_click": (t == "ad_click") == pl.col("converted").is_not_null(),
    }
    for rule, expr in rules.items():
        assert ev.select(expr.all()).item(), rule
    # Sessions belong to one visitor, and nobody acts before signing up.
    assert ev.group_by("session_id").agg(pl.col("user_id").n_unique()).select(pl.col("user_id").max()).item() == 1
    early = ev.join(shop.users.select("user_id", "signup_ts"), on="user_id").filter(pl.col("ts") < pl.col("signup_ts"))
    assert early.height == 0


def test_every_purchase_has_an_order(shop: SyntheticShop) -> None:
    buys = shop.events.filter((pl.col("type") == "purchase") & pl.col("user_id").is_not_null())
    lines = _order_lines(shop.orders)
    key = ["user_id", "ts", "item_id"]
    assert buys.height > 300
    assert buys.join(lines, on=key, how="anti").height == 0
    assert lines.join(buys, on=key, how="anti").height == 0
    assert shop.orders["order_id"].n_unique() == shop.orders.height
    # Amount = basket value, except the discounted first orders of promotion abuse.
    value = lines.group_by("order_id").agg(v=(pl.col("price") * pl.col("quantity")).sum())
    o = shop.orders.join(value, on="order_id")
    full = o.filter(pl.col("fraud_pattern").ne_missing("promotion_abuse"))
    assert (full["amount"] - full["v"]).abs().max() < 0.01
    assert o.filter(pl.col("fraud_pattern") == "promotion_abuse").select((pl.col("amount") < pl.col("v")).all()).item()
    # Every order is paid once; failed attempts and card tests are extra payments.
    paid = shop.payments.filter(pl.col("status") == "authorised", pl.col("order_id").is_not_null())
    assert paid["order_id"].n_unique() == paid.height == shop.orders.height
    assert set(shop.payments["order_id"].drop_nulls()) <= set(shop.orders["order_id"])
    assert set(shop.payments["method"].unique()) == {"card", "paypal", "klarna"}


def test_users_and_items_look_real(shop: SyntheticShop) -> None:
    u = shop.users
    assert u["email"].n_unique() == u.height and u["phone"].n_unique() == u.height
    assert u["email"].str.contains(r"^[a-z_.]+[0-9]+@[a-z.]+$").all()
    assert u["phone"].str.contains(r"^\+\d{2} \d{1,3} \d{7}$").all()
    assert u["address"].str.contains(r"\d+.*, \S+ ").all()
    assert (u["country"] == "DE").mean() > 0.6
    assert 0.8 < u["consent_personalization"].mean() < 0.9
    assert 0.5 < u["consent_advertising"].mean() < 0.7
    assert 0.68 < u["consent_analytics"].mean() < 0.82

    items = shop.items
    levels = items["category"].str.split(" > ")
    assert (levels.list.len() == 3).all()
    tops = levels.list.first()
    assert set(tops.unique()) == set(TOP_CATEGORIES) and len(TOP_CATEGORIES) >= 8
    subs = items.select(top=tops, sub=levels.list.get(1)).unique().group_by("top").len()
    assert subs["len"].is_between(3, 6).all()
    assert all(json.loads(a) and isinstance(json.loads(a), dict) for a in items["attributes"])
    assert (items["title"].str.starts_with(items["brand"])).all()
    assert (items["price"] > 0).all() and items["stock"].min() >= 0
    assert set(tops.filter(items["consumable"]).unique()) == {"Grocery", "Beauty"}
    # Descriptions speak the category's language: a per-category word beats chance.
    words = items.select(top=tops, d=pl.col("description").str.to_lowercase())
    assert words.filter(pl.col("top") == "Beauty")["d"].str.contains("skin|vitamin|serum|cream|shea|aloe").mean() > 0.5


# 3. Funnel ---------------------------------------------------------------------------------

def test_funnel(shop: SyntheticShop) -> None:
    n = dict(shop.events.group_by("type").len().iter_rows())
    assert n["view"] > n["add_to_cart"] > n["purchase"] > n["rating"] > 0
    assert n["search"] > 0 and n["click"] > 0 and n["remove_from_cart"] > 0
    assert 0.01 < n["purchase"] / n["view"] < 0.08  # a few percent
    per_session = shop.events.group_by("session_id").agg(
        anon=pl.col("user_id").is_null().first(), bought=(pl.col("type") == "purchase").any()
    )
    assert per_session["bought"].mean() < 0.2  # most sessions end without a purchase
    assert abs(per_session["anon"].mean() - shop.config.anonymous_share) < 0.03
    # Anonymous visitors run through the same funnel.
    anon = shop.events.filter(pl.col("user_id").is_null())["type"].value_counts()
    assert {"search", "view", "add_to_cart", "purchase", "ad_click"} <= set(anon["type"])


def test_ads_click_through_and_conversion_labels(shop: SyntheticShop) -> None:
    ev = shop.events.join(_top(shop.items), on="item_id", how="left")
    ads = ev.filter(pl.col("type").is_in(["ad_impression", "ad_click"]), pl.col("user_id").is_not_null())
    ads = ads.join(shop.truth.select("user_id", "favourite_category"), on="user_id")
    ads = ads.with_columns(match=pl.col("top") == pl.col("favourite_category"))
    clicks, impressions = (pl.col("type") == "ad_click").sum(), (pl.col("type") == "ad_impression").sum()
    rate = ads.group_by("match").agg(ctr=clicks / impressions)
    ctr = dict(rate.iter_rows())
    assert ctr[True] > 1.5 * ctr[False]
    total = (ev["type"] == "ad_click").sum() / (ev["type"] == "ad_impression").sum()
    assert 0.01 < total < 0.1
    # converted == the clicked item was bought in the same session.
    clicks = ev.filter(pl.col("type") == "ad_click").select("session_id", "item_id", "converted")
    bought = ev.filter(pl.col("type") == "purchase").select("session_id", "item_id").unique()
    bought = bought.with_columns(b=pl.lit(True))
    check = clicks.join(bought, on=["session_id", "item_id"], how="left").with_columns(pl.col("b").fill_null(False))
    assert (check["b"] == check["converted"]).all() and check["converted"].any()


# 4./5. Power law and seasonality --------------------------------------------------------

def test_item_exposure_follows_a_power_law(shop: SyntheticShop) -> None:
    views = shop.events.filter(pl.col("type") == "view").group_by("item_id").len().sort("len", descending=True)
    top_decile = views["len"].head(shop.items.height // 10).sum() / views["len"].sum()
    assert top_decile > 0.4


def test_seasonality_by_hour_and_weekday(shop: SyntheticShop) -> None:
    local = shop.events.select(ts=pl.col("ts").dt.convert_time_zone("Europe/Berlin"))
    local = local.with_columns(h=pl.col("ts").dt.hour(), weekend=pl.col("ts").dt.weekday() >= 6)
    by_hour = dict(local.group_by("h").len().iter_rows())
    assert min(by_hour[h] for h in (19, 20, 21)) > 4 * max(by_hour[h] for h in (3, 4, 5))
    # Weekends: busier late mornings relative to the evening peak.
    share = local.group_by("weekend").agg(
        (pl.col("h").is_between(10, 13).sum() / pl.col("h").is_between(19, 21).sum()).alias("r")
    )
    r = dict(share.iter_rows())
    assert r[True] > 1.1 * r[False]


# 6. Fraud -----------------------------------------------------------------------------------

def test_fraud_share_and_patterns(shop: SyntheticShop) -> None:
    o = shop.orders
    assert abs(o["label_fraud"].mean() - shop.config.fraud_share) < 0.006
    patterns = {"account_takeover", "card_testing", "promotion_abuse", "reshipping"}
    assert set(o["fraud_pattern"].drop_nulls()) == patterns
    assert (o["label_fraud"] == o["fraud_pattern"].is_not_null()).all()
    home = shop.users.select("user_id", home="country")
    o = o.join(home, on="user_id")
    legit = o.filter(~pl.col("label_fraud"))

    ato = o.filter(pl.col("fraud_pattern") == "account_takeover")
    assert (ato["shipping_country"] != ato["home"]).all() and (ato["ip_country"] != ato["home"]).all()
    assert ato["amount"].median() > 3 * legit["amount"].median()
    assert ato.join(legit, on=["user_id", "device_id"], how="semi").height == 0  # a new device

    card = shop.payments.filter(pl.col("fraud_pattern") == "card_testing")
    assert (card["status"] == "declined").mean() > 0.5 and card["amount"].max() < 5
    bursts = card.group_by("user_id").agg(cards=pl.col("payment_instrument").n_unique(),
                                          span=pl.col("ts").max() - pl.col("ts").min())
    assert bursts["cards"].min() >= 8

    promo = o.filter(pl.col("fraud_pattern") == "promotion_abuse")
    rings = promo.join(shop.users.select("user_id", "address"), on="user_id").group_by("device_id").agg(
        accounts=pl.col("user_id").n_unique(), addresses=pl.col("address").n_unique())
    assert rings["accounts"].max() >= 3 and (rings["addresses"] == 1).all()
    assert promo["amount"].median() < legit["amount"].median()

    resh = o.filter(pl.col("fraud_pattern") == "reshipping")
    assert (resh["shipping_country"] != resh["ip_country"]).all() and (resh["shipping_country"] != resh["home"]).all()
    assert resh["shipping_country"].n_unique() <= 2 and resh["amount"].median() > 3 * legit["amount"].median()

    fraudsters = set(shop.truth.filter(pl.col("is_fraudster"))["user_id"])
    organised = o.filter(pl.col("fraud_pattern").is_in(["card_testing", "promotion_abuse", "reshipping"]))
    assert set(organised["user_id"]) == fraudsters
    assert not set(ato["user_id"]) & fraudsters  # takeover victims are honest customers


# Other realism requirements --------------------------------------------------------------

def test_consumables_are_rebought_after_an_interval(shop: SyntheticShop) -> None:
    buys = shop.events.filter(pl.col("type") == "purchase", pl.col("user_id").is_not_null())
    buys = buys.join(shop.items.select("item_id", "consumable"), on="item_id")
    repeat = (buys.sort("ts").group_by("user_id", "item_id", "consumable")
              .agg(n=pl.len(), gap=pl.col("ts").diff().dt.total_hours().min() / 24))
    again = repeat.filter(pl.col("n") >= 2)
    assert again.filter(pl.col("consumable")).height >= 10
    assert again.filter(pl.col("consumable"))["gap"].median() > 5  # a refill interval, not a double click
    rate = repeat.group_by("consumable").agg((pl.col("n") >= 2).mean().alias("r"))
    r = dict(rate.iter_rows())
    assert r[True] > 3 * r[False]


def test_tastes_drift_for_some_users(shop: SyntheticShop) -> None:
    truth = shop.truth
    assert 0.1 < truth["drift_to"].is_not_null().mean() < 0.3
    assert (truth["drift_to"] != truth["favourite_category"]).all()
    mid = shop.config.start + timedelta(days=shop.config.days / 2)
    views = shop.events.filter(pl.col("type") == "view").join(_top(shop.items), on="item_id")
    views = views.join(truth.filter(pl.col("drift_to").is_not_null()), on="user_id")
    share = views.group_by(late=pl.col("ts") > mid).agg((pl.col("top") == pl.col("drift_to")).mean().alias("s"))
    s = dict(share.iter_rows())
    assert s[True] > s[False] + 0.15


# 7. Learnability -----------------------------------------------------------------------------

def _hit_rates(shop: SyntheticShop, min_targets: int = 100) -> dict[str, float]:
    """Predict the top-level category of each later purchase (last third of the window).

    - popularity: the category bought most often before the cut-off, for everyone;
    - per user:   the category the user viewed/carted most before the cut-off
                  (falls back to popularity for users without history);
    - truth:      the generator's latent favourite category.
    """
    cfg = shop.config
    cut = cfg.start + timedelta(days=cfg.days * 2 / 3)
    ev = shop.events.filter(pl.col("user_id").is_not_null()).join(_top(shop.items), on="item_id")
    early, late = ev.filter(pl.col("ts") < cut), ev.filter(pl.col("ts") >= cut)
    popular = early.filter(pl.col("type") == "purchase")["top"].mode().sort()[0]
    signal = early.filter(pl.col("type").is_in(["view", "add_to_cart"])).with_columns(
        w=pl.when(pl.col("type") == "add_to_cart").then(3).otherwise(1)
    )
    per_user = (signal.group_by("user_id", "top").agg(pl.col("w").sum())
                .sort(["user_id", "w", "top"], descending=[False, True, False])
                .group_by("user_id", maintain_order=True).first().select("user_id", guess="top"))
    target = (late.filter(pl.col("type") == "purchase")
              .join(per_user, on="user_id", how="left")
              .join(shop.truth.select("user_id", "favourite_category"), on="user_id")
              .with_columns(pl.col("guess").fill_null(popular)))
    assert target.height >= min_targets, "too few held-out purchases for a meaningful test"
    return {
        "popularity": (target["top"] == popular).mean(),
        "per_user": (target["top"] == target["guess"]).mean(),
        "truth": (target["top"] == target["favourite_category"]).mean(),
    }


def test_learnability_per_user_history_beats_popularity(shop: SyntheticShop) -> None:
    hits = _hit_rates(shop)
    assert hits["per_user"] >= hits["popularity"] + 0.15, hits
    assert hits["truth"] >= hits["popularity"] + 0.15, hits


def test_learnability_test_fails_without_tastes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: with uniform tastes (and no drift) the check above must fail."""
    original = population.sample_profiles

    def uniform(*args, **kwargs) -> population.Profiles:
        prof = original(*args, **kwargs)
        prof.taste[:] = 1.0 / prof.taste.shape[1]
        prof.drift_to[:] = -1
        return prof

    monkeypatch.setattr(population, "sample_profiles", uniform)
    # Flat tastes mean fewer purchases; a larger shop keeps sampling noise well below the margin.
    hits = _hit_rates(generate_shop(n_users=6000, days=30, seed=SEED))
    assert hits["per_user"] < hits["popularity"] + 0.15, hits


# Files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_write_shop(tmp_path: Path, fmt: str) -> None:
    shop = generate_shop(n_users=1000, days=3, seed=1)
    paths = write_shop(shop, tmp_path / fmt, fmt=fmt)
    assert set(paths) == set(TABLES) | {"ad_labels"}
    assert paths["truth"].suffix == ".parquet" and paths["events"].suffix == f".{fmt}"
    read = {"csv": pl.read_csv, "jsonl": pl.read_ndjson, "parquet": pl.read_parquet}[fmt]
    if fmt != "parquet":  # sparse columns (e.g. converted) are null for many rows
        read = partial(read, infer_schema_length=None)
    for name in TABLES[:-1]:
        back = read(paths[name])
        public = getattr(shop, name).drop(["converted"] if name == "events" else [])  # labels go apart
        assert back.columns == public.columns and back.height == public.height
    labels = pl.read_parquet(paths["ad_labels"])
    clicks = shop.events.filter(pl.col("type") == "ad_click")
    assert labels["event_id"].to_list() == clicks["event_id"].to_list()
    assert labels["converted"].to_list() == clicks["converted"].to_list()
    assert_frame_equal(pl.read_parquet(paths["truth"]), shop.truth)
    if fmt != "parquet":
        items = read(paths["items"])
        assert json.loads(items["attributes"][0])
    with pytest.raises(ValueError):
        write_shop(shop, tmp_path / "x", fmt="xlsx")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_stream_shop_writes_the_same_tables(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shopmind.synth import generator

    # Small chunks and buckets so that the test crosses chunk and bucket boundaries.
    monkeypatch.setattr(generator, "CHUNK_USERS", 400)
    monkeypatch.setattr(generator, "MAX_BUCKETS", 3)
    cfg = ShopConfig(n_users=1000, days=7, seed=5)
    expected = write_shop(generate_shop(cfg), tmp_path / "memory", fmt=fmt)
    streamed = stream_shop(tmp_path / "stream", cfg, fmt=fmt)
    assert set(streamed) == set(expected)
    assert not list((tmp_path / "stream").glob("shopmind-*"))  # spill files are cleaned up
    read = {"csv": partial(pl.read_csv, infer_schema_length=None), "parquet": pl.read_parquet}[fmt]
    for name in (*TABLES, "ad_labels"):
        reader = pl.read_parquet if name in ("truth", "ad_labels") else read
        assert_frame_equal(reader(streamed[name]), reader(expected[name]), check_dtypes=fmt == "parquet")
