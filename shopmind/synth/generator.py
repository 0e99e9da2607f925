"""Deterministic synthetic shop: catalog, users, behaviour events, orders, payments, truth.

Users are simulated in fixed-size chunks (each with its own seeded random stream), so
memory for the simulation itself stays bounded and the output depends only on the
config, never on how the work is split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl

from shopmind.synth import fraud, vocab
from shopmind.synth.behaviour import Ads, build_ads, simulate_browsing, simulate_ratings, simulate_reorders
from shopmind.synth.catalog import Catalog, build_catalog, default_n_items, flatten_taxonomy
from shopmind.synth.commerce import build_orders, orders_frame, payments_frame
from shopmind.synth.population import ALL_COUNTRIES, Profiles, Users, sample_profiles, sample_users, user_ids
from shopmind.synth.sessions import (
    EVENT_TYPES, PURCHASE, EventParts, SessionTable, Window, assemble, concat_events, seasonal_times,
)
from shopmind.synth.util import US_PER_DAY, epoch_us, ids, to_datetime

CHUNK_USERS = 20_000  # fixed: part of the output's definition (each chunk has its own stream)
MAX_BUCKETS = 64  # events are sorted per time bucket; at most this many buckets
SAME_DEVICE_P = 0.75  # sessions on the visitor's usual device type
HOME_IP_P = 0.96  # sessions from the visitor's own country (the rest: travel/VPN)


@dataclass
class ShopConfig:
    """What to generate. Same config -> identical data."""

    n_users: int = 5_000
    n_items: int | None = None  # default: max(500, n_users // 5), capped at 200,000
    days: int = 60
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    seed: int = 0
    anonymous_share: float = 0.15  # share of sessions from anonymous visitors
    fraud_share: float = 0.02  # share of orders that are fraudulent
    currency: str = "EUR"

    def resolved_n_items(self) -> int:
        return self.n_items if self.n_items is not None else default_n_items(self.n_users)

    def validate(self) -> None:
        if not 1 <= self.n_users < 10_000_000:
            raise ValueError("n_users must be between 1 and 9,999,999")
        min_items = len(flatten_taxonomy())  # one item per leaf category at least
        if self.n_items is not None and not min_items <= self.n_items < 1_000_000:
            raise ValueError(f"n_items must be between {min_items} and 999,999")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if not 0.0 <= self.anonymous_share < 1.0 or not 0.0 <= self.fraud_share < 0.5:
            raise ValueError("anonymous_share must be in [0, 1) and fraud_share in [0, 0.5)")
        epoch_us(self.start)  # must be timezone-aware


@dataclass
class SyntheticShop:
    """The generated data. ``truth`` is ground truth for evaluation, never for the service."""

    config: ShopConfig
    items: pl.DataFrame
    users: pl.DataFrame
    events: pl.DataFrame
    orders: pl.DataFrame
    payments: pl.DataFrame
    truth: pl.DataFrame


@dataclass
class ShopContext:
    """Shared, read-only state for all chunks."""

    config: ShopConfig
    win: Window
    catalog: Catalog
    ads: Ads
    ad_ids: pl.Series
    campaign_ids: pl.Series


@dataclass
class ShopChunk:
    """The rows produced by one chunk of users (see :func:`iter_chunks`)."""

    users: pl.DataFrame
    truth: pl.DataFrame
    events: pl.DataFrame
    orders: pl.DataFrame
    payments: pl.DataFrame
    n_sessions: int


def generate_shop(config: ShopConfig | None = None, **overrides: Any) -> SyntheticShop:
    """Generate a complete synthetic shop in memory. Keyword overrides replace config fields.

    The result needs roughly 200 bytes per event (~75 events per user over 60 days); for
    very large shops use :func:`shopmind.synth.io.stream_shop`, which writes the same data
    to disk with bounded memory.
    """
    cfg = resolve_config(config, **overrides)
    ctx = build_context(cfg)
    bucket_us, n_buckets = time_buckets(cfg)
    users, truth, orders, payments = [], [], [], []
    buckets: dict[int, list[pl.DataFrame]] = defaultdict(list)
    empty: pl.DataFrame | None = None  # keeps the schema should there be no events at all
    for chunk in iter_chunks(ctx):
        empty = chunk.events.clear() if empty is None else empty
        users.append(chunk.users)
        truth.append(chunk.truth)
        orders.append(chunk.orders)
        payments.append(chunk.payments)
        for b, part in split_by_time(chunk.events, ctx.win.start, bucket_us, n_buckets).items():
            buckets[b].append(part)
    # Buckets are disjoint in time: sorting each one on its own gives the global order,
    # and each bucket's unsorted parts are released as soon as it is done.
    events, next_id = [], 1
    for b in sorted(buckets):
        part = finish_events(pl.concat(buckets.pop(b), rechunk=False), first_id=next_id)
        next_id += part.height
        events.append(part)
    all_orders, all_payments = finish_orders(pl.concat(orders), pl.concat(payments))
    return SyntheticShop(
        config=cfg,
        items=ctx.catalog.items,
        users=pl.concat(users),
        events=pl.concat(events, rechunk=False) if events else finish_events(empty),
        orders=all_orders,
        payments=all_payments,
        truth=pl.concat(truth),
    )


def time_buckets(cfg: ShopConfig) -> tuple[int, int]:
    """Width (us) and count of the time buckets used to sort events piecewise (<= 64)."""
    width = -(-cfg.days // MAX_BUCKETS) * US_PER_DAY
    return width, -(-cfg.days * US_PER_DAY // width)


def split_by_time(events: pl.DataFrame, start_us: int, bucket_us: int, n_buckets: int) -> dict[int, pl.DataFrame]:
    """Events of one chunk split into time buckets (bucket index -> rows, order kept). A session that
    runs past the window's end goes into the last bucket (with one day, that was a bucket past the last:
    an IndexError and a half-written folder), one before its start into the first: still in time order."""
    bucket = ((events["ts"].dt.epoch("us") - start_us) // bucket_us).clip(0, n_buckets - 1)
    parts = events.with_columns(_bucket=bucket).partition_by("_bucket", as_dict=True, maintain_order=True)
    return {int(b): part.drop("_bucket") for (b,), part in parts.items()}


def resolve_config(config: ShopConfig | None = None, **overrides: Any) -> ShopConfig:
    """The config with overrides applied, validated."""
    cfg = replace(config or ShopConfig(), **overrides)
    cfg.validate()
    return cfg


def build_context(cfg: ShopConfig) -> ShopContext:
    """Catalog and ad inventory shared by all chunks."""
    rng = np.random.default_rng([cfg.seed, 0])
    start = epoch_us(cfg.start)
    catalog = build_catalog(rng, cfg.resolved_n_items(), cfg.currency)
    ads = build_ads(rng, catalog)
    n_ads = len(ads.item)
    return ShopContext(
        config=cfg,
        win=Window(start, start + cfg.days * US_PER_DAY),
        catalog=catalog,
        ads=ads,
        ad_ids=ids("ad", np.arange(1, n_ads + 1), 5),
        campaign_ids=ids("cmp", ads.campaign + 1, 4),
    )


def iter_chunks(ctx: ShopContext) -> Iterator[ShopChunk]:
    """Simulate users chunk by chunk; session ids continue across chunks.

    Chunk frames are not final: events are unsorted and lack ids, orders and payments
    carry an internal ``_key`` (see :func:`finish_events`, :func:`finish_orders`).
    """
    n = ctx.config.n_users
    session_offset = 0
    for k, lo in enumerate(range(0, n, CHUNK_USERS)):
        chunk = _simulate_chunk(ctx, k, np.arange(lo, min(lo + CHUNK_USERS, n)), session_offset)
        session_offset += chunk.n_sessions
        yield chunk


def _simulate_chunk(ctx: ShopContext, k: int, idx: np.ndarray, session_offset: int) -> ShopChunk:
    """All behaviour of one chunk of users, plus its share of anonymous traffic and fraud."""
    cfg = ctx.config
    rng = np.random.default_rng([cfg.seed, 1, k])
    users = sample_users(rng, idx, cfg.n_users, ctx.win.start, cfg.days)
    n_pool = min(len(idx) // 4, fraud.fraud_accounts_needed(len(idx), cfg.days, cfg.fraud_share))
    pool = rng.choice(len(idx), size=n_pool, replace=False)  # held back as fraudster accounts
    sessions = SessionTable()
    batches, bought = _registered_behaviour(rng, ctx, users, pool, sessions)

    bank, extra, parts = fraud.TokenBank(rng), fraud.ExtraPayments(), EventParts()
    counts = fraud.plan(rng, len(np.unique(bought["session"])), cfg.fraud_share)
    fraud.inject(rng, counts, parts, sessions, users, pool, np.unique(bought["user"]), ctx.catalog, bank, extra,
                 ctx.win)
    batches.append(assemble(rng, parts, sessions))
    batches.extend(_anonymous_behaviour(rng, ctx, sessions))

    ev = concat_events(batches)
    orders = build_orders(rng, ev, sessions, users, ctx.catalog, bank)
    return ShopChunk(
        users=users.to_frame(),
        truth=users.truth_frame(),
        events=_events_frame(ctx, ev, sessions, users, session_offset),
        orders=orders_frame(orders, users, session_offset, cfg.currency),
        payments=payments_frame(rng, orders, extra, users, bank, session_offset, cfg.currency),
        n_sessions=sessions.n,
    )


def _registered_behaviour(
    rng: np.random.Generator, ctx: ShopContext, users: Users, pool: np.ndarray, sessions: SessionTable
) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Browsing, repeat purchases and ratings of registered users (except the fraud pool).

    Returns the assembled event batches and all purchases (for fraud planning).
    """
    win, catalog, prof = ctx.win, ctx.catalog, users.profiles
    active = np.ones(len(users), dtype=bool)
    active[pool] = False
    lo = np.maximum(users.signup_us, win.start)  # nobody shops before signing up
    expected = users.activity * np.maximum(win.stop - lo, 0) / US_PER_DAY * active
    owner, t = seasonal_times(rng, lo, np.full(len(users), win.stop), expected)
    sid = sessions.add(len(owner), user=owner, start=t, **_device_country(rng, prof, owner))
    parts = EventParts()
    simulate_browsing(rng, parts, sessions, sid, owner, prof, catalog, ctx.ads, win)
    batches = [assemble(rng, parts, sessions)]
    purchases = [_logged_purchases(batches[0], sessions)]

    # Consumables are rebought after their refill interval, possibly several times.
    while len(purchases[-1]["item"]):
        parts = EventParts()
        if not simulate_reorders(rng, parts, sessions, purchases[-1], prof.device, prof.country, catalog, win):
            break
        batches.append(assemble(rng, parts, sessions))
        purchases.append(_logged_purchases(batches[-1], sessions))
    bought = {key: np.concatenate([p[key] for p in purchases]) for key in purchases[0]}
    parts = EventParts()
    simulate_ratings(rng, parts, sessions, bought, prof, prof.device, prof.country, catalog, win)
    batches.append(assemble(rng, parts, sessions))
    return batches, bought


def _anonymous_behaviour(
    rng: np.random.Generator, ctx: ShopContext, sessions: SessionTable
) -> list[dict[str, np.ndarray]]:
    """Visitors who never log in, sized to make up ``anonymous_share`` of all sessions.

    They get their own latent tastes and run through the same funnel as registered users.
    """
    share, win = ctx.config.anonymous_share, ctx.win
    n_visitors = int(round(sessions.n * share / (1.0 - share)))
    if n_visitors == 0:
        return []
    prof = sample_profiles(rng, n_visitors)
    owner, t = seasonal_times(rng, np.full(n_visitors, win.start), np.full(n_visitors, win.stop), np.ones(n_visitors))
    sid = sessions.add(len(owner), user=-1, start=t, **_device_country(rng, prof, owner))
    parts = EventParts()
    simulate_browsing(rng, parts, sessions, sid, owner, prof, ctx.catalog, ctx.ads, win)
    return [assemble(rng, parts, sessions)]


def _device_country(rng: np.random.Generator, prof: Profiles, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per session: mostly the visitor's usual device type and home country."""
    n = len(rows)
    device = np.where(rng.random(n) < SAME_DEVICE_P, prof.device[rows], rng.integers(0, len(vocab.DEVICES), n))
    travel = rng.integers(0, len(vocab.COUNTRIES), n)
    country = np.where(rng.random(n) < HOME_IP_P, prof.country[rows], travel)
    return {"device": device, "country": country}


def _logged_purchases(ev: dict[str, np.ndarray], sessions: SessionTable) -> dict[str, np.ndarray]:
    """Purchase events of registered users (who can rebuy and rate)."""
    user = sessions["user"][ev["session"]]
    p = np.flatnonzero((ev["type"] == PURCHASE) & (user >= 0))
    return {"session": ev["session"][p], "user": user[p], "item": ev["item"][p],
            "quantity": ev["quantity"][p], "ts": ev["ts"][p]}


def _nullable(lookup: pl.Series, idx: np.ndarray) -> pl.Series:
    """``lookup[idx]`` with null where ``idx`` < 0."""
    idx = np.asarray(idx, dtype=np.int64)
    values = lookup.gather(np.maximum(idx, 0)) if len(lookup) else pl.Series([None] * len(idx), dtype=pl.Utf8)
    return pl.select(pl.when(pl.lit(pl.Series(idx)) >= 0).then(pl.lit(values))).to_series()


def _events_frame(
    ctx: ShopContext, ev: dict[str, np.ndarray], sessions: SessionTable, users: Users, session_offset: int
) -> pl.DataFrame:
    """Public event columns for one chunk, in session order (``event_id`` comes later)."""
    s = ev["session"]
    user_row = sessions["user"][s]
    conv, qty, ad = ev["converted"], ev["quantity"], ev["ad"]
    return pl.DataFrame(
        {
            "user_id": _nullable(user_ids(users.idx), user_row),
            "session_id": ids("s", s + session_offset + 1, 9),
            "type": pl.Series(EVENT_TYPES, dtype=pl.Utf8).gather(ev["type"]),
            "item_id": _nullable(ctx.catalog.item_ids, ev["item"]),
            "query": _nullable(ctx.catalog.queries, ev["query"]),
            "price": pl.Series(ev["price"], dtype=pl.Float64, nan_to_null=True),
            "quantity": pl.Series(np.where(qty >= 0, qty, 0), dtype=pl.Int64).set(pl.Series(qty < 0), None),
            "rating": pl.Series(ev["rating"], dtype=pl.Float64, nan_to_null=True),
            "device": pl.Series(vocab.DEVICES, dtype=pl.Utf8).gather(sessions["device"][s]),
            "country": pl.Series(ALL_COUNTRIES, dtype=pl.Utf8).gather(sessions["country"][s]),
            "ts": to_datetime(ev["ts"]),
            "ad_id": _nullable(ctx.ad_ids, ad),
            "campaign_id": _nullable(ctx.campaign_ids, np.where(ad >= 0, ctx.ads.campaign[np.maximum(ad, 0)], -1)),
            "converted": pl.Series(conv == 1, dtype=pl.Boolean).set(pl.Series(conv < 0), None),
        }
    )


EVENT_COLUMNS = (
    "event_id", "user_id", "session_id", "type", "item_id", "query", "price", "quantity", "rating",
    "device", "country", "ts", "ad_id", "campaign_id", "converted",
)
ORDER_COLUMNS = ("order_id", "user_id", "ts", "amount", "currency", "items", "shipping_country", "ip_country",
                 "device_id", "payment_instrument", "label_fraud", "fraud_pattern")
PAYMENT_COLUMNS = ("payment_id", "order_id", "user_id", "ts", "amount", "currency", "payment_instrument",
                   "method", "status", "label_fraud", "fraud_pattern")
ID_WIDTH = 9  # e000000001; ids simply grow longer beyond 999,999,999 events


def finish_events(events: pl.DataFrame, first_id: int = 1) -> pl.DataFrame:
    """Time order and sequential event ids starting at ``first_id``.

    The sort is stable, so ties keep the (deterministic) chunk/session order.
    """
    events = events.sort("ts", maintain_order=True)
    event_id = ids("e", np.arange(first_id, first_id + events.height), ID_WIDTH)
    return events.with_columns(event_id=event_id).select(EVENT_COLUMNS)


def finish_orders(orders: pl.DataFrame, payments: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Order/payment ids in time order; payments reference orders by id."""
    orders = orders.sort(["ts", "_key"], maintain_order=True)
    orders = orders.with_columns(order_id=ids("o", np.arange(1, orders.height + 1), 8))
    payments = payments.join(orders.select("_key", "order_id"), on="_key", how="left", maintain_order="left")
    payments = payments.sort("ts", maintain_order=True)
    payments = payments.with_columns(payment_id=ids("p", np.arange(1, payments.height + 1), ID_WIDTH))
    return orders.select(ORDER_COLUMNS), payments.select(PAYMENT_COLUMNS)
