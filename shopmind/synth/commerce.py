"""Orders and payments derived from the purchase events of logged-in sessions.

Building orders *from* the events guarantees the contract that every logged-in purchase
event has an order with the same user, timestamp and item.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from shopmind.synth import vocab
from shopmind.synth.catalog import Catalog
from shopmind.synth.fraud import ExtraPayments, TokenBank
from shopmind.synth.population import ALL_COUNTRIES, METHOD_PREFIX, Users, user_ids
from shopmind.synth.sessions import FRAUD_PATTERNS, PURCHASE, SessionTable
from shopmind.synth.util import US_PER_SECOND, to_datetime, to_utf8

LEGIT_DECLINE_P = 0.02  # honest customers whose first payment attempt fails
CARD = vocab.PAYMENT_METHODS.index("card")


def build_orders(
    rng: np.random.Generator,
    ev: dict[str, np.ndarray],
    sessions: SessionTable,
    users: Users,
    catalog: Catalog,
    bank: TokenBank,
) -> dict[str, np.ndarray | pl.Series]:
    """One order per logged-in session with purchases. Keyed by the (chunk-local) session."""
    p = np.flatnonzero((ev["type"] == PURCHASE) & (sessions["user"][ev["session"]] >= 0))
    lines = pl.DataFrame(
        {
            "session": ev["session"][p],
            "ts": ev["ts"][p],
            "item_id": catalog.item_ids.gather(ev["item"][p]),
            "quantity": ev["quantity"][p],
            "price": ev["price"][p],
        }
    )
    c = pl.col
    line_json = pl.concat_str(
        [pl.lit('{"item_id":"'), c.item_id, pl.lit('","quantity":'), c.quantity.cast(pl.Utf8),
         pl.lit(',"price":'), c.price.round(2).cast(pl.Utf8), pl.lit("}")]
    )
    grouped = (
        lines.with_columns(line=line_json, value=c.price * c.quantity)
        .group_by("session", maintain_order=True)
        .agg(ts=c.ts.first(), gross=c.value.sum(),
             items=pl.concat_str([pl.lit("["), c.line.str.join(","), pl.lit("]")]))
        .sort("session")
    )
    s = grouped["session"].to_numpy()
    u = sessions["user"][s]
    n = len(s)
    own_dev = users.device_ids[u, ((rng.random(n) < 0.3) & (users.n_devices[u] == 2)).astype(np.int64)]
    slot = ((rng.random(n) < 0.25) & (users.n_instruments[u] == 2)).astype(np.int64)
    dev_row, instr_row = sessions["device_id"][s], sessions["instrument"][s]
    # Fraud sessions may override device and card with tokens from the bank.
    devices = np.append(bank.device_array(), np.zeros(1, "S12"))
    cards = np.append(bank.card_array(), np.zeros(1, "S12"))
    ship = sessions["ship_country"][s]
    return {
        "session": s,
        "user": u,
        "ts": grouped["ts"].to_numpy(),
        "amount": np.round(grouped["gross"].to_numpy() * (1.0 - sessions["discount"][s]), 2),
        "items": grouped["items"],
        "ship_country": np.where(ship >= 0, ship, users.profiles.country[u]),
        "ip_country": sessions["country"][s],
        "device_token": np.where(dev_row >= 0, devices[dev_row], own_dev),
        "instrument": np.where(instr_row >= 0, cards[instr_row], users.instruments[u, slot]),
        "method": np.where(instr_row >= 0, CARD, users.instrument_method[u, slot]),
        "fraud": sessions["fraud"][s],
    }


def orders_frame(orders: dict, users: Users, session_offset: int, currency: str) -> pl.DataFrame:
    """Public ``orders`` rows (with an internal ``_key`` = global session index)."""
    countries = pl.Series(ALL_COUNTRIES, dtype=pl.Utf8)
    return pl.DataFrame(
        {
            "_key": orders["session"] + session_offset,
            "user_id": user_ids(users.idx[orders["user"]]),
            "ts": to_datetime(orders["ts"]),
            "amount": pl.Series(orders["amount"], dtype=pl.Float64),
            "currency": pl.Series([currency] * len(orders["session"]), dtype=pl.Utf8),
            "items": orders["items"],
            "shipping_country": countries.gather(orders["ship_country"]),
            "ip_country": countries.gather(orders["ip_country"]),
            "device_id": to_utf8(orders["device_token"], "dev_"),
            "payment_instrument": _instrument(orders["instrument"], orders["method"]),
            "label_fraud": pl.Series(orders["fraud"] >= 0, dtype=pl.Boolean),
            "fraud_pattern": _pattern(orders["fraud"]),
        }
    )


def payments_frame(
    rng: np.random.Generator,
    orders: dict,
    extra: ExtraPayments,
    users: Users,
    bank: TokenBank,
    session_offset: int,
    currency: str,
) -> pl.DataFrame:
    """Payments: the successful one per order, failed retries, and card-testing attempts."""
    n = len(orders["session"])
    # Successful payment a few seconds after checkout.
    ok_ts = orders["ts"] + (rng.uniform(1, 20, n) * US_PER_SECOND).astype(np.int64)
    # Some honest customers fail once (typo, limit) and succeed with the same instrument.
    d = np.flatnonzero((orders["fraud"] < 0) & (rng.random(n) < LEGIT_DECLINE_P))
    d_ts = orders["ts"][d] - (rng.uniform(20, 120, len(d)) * US_PER_SECOND).astype(np.int64)
    x = extra.arrays()
    x_session = x["session"].astype(np.int64)
    linked = x_session >= 0
    order_row = np.searchsorted(orders["session"], np.maximum(x_session, 0))
    order_row = np.minimum(order_row, max(n - 1, 0))
    x_ts = np.where(linked, orders["ts"][order_row] if n else 0, 0) + x["ts"].astype(np.int64)
    x_cards = bank.card_array()[x["card"].astype(np.int64)] if len(x_ts) else np.zeros(0, "S12")
    x_user = x["user"].astype(np.int64)
    parts = {
        "_key": [orders["session"], orders["session"][d], np.where(linked, x_session, -1)],
        "user": [orders["user"], orders["user"][d], x_user],
        "ts": [ok_ts, d_ts, x_ts],
        "amount": [orders["amount"], orders["amount"][d], x["amount"].astype(np.float64)],
        "instrument": [orders["instrument"], orders["instrument"][d], x_cards],
        "method": [orders["method"], orders["method"][d], np.full(len(x_ts), CARD)],
        "declined": [np.zeros(n, bool), np.ones(len(d), bool), x["declined"].astype(bool)],
        "fraud": [orders["fraud"], orders["fraud"][d], x["pattern"].astype(np.int64)],
    }
    a = {k: np.concatenate(v) for k, v in parts.items()}
    key = pl.Series(a["_key"] + session_offset)
    return pl.DataFrame(
        {
            "_key": pl.select(pl.when(pl.lit(a["_key"]) >= 0).then(pl.lit(key))).to_series(),
            "user_id": user_ids(users.idx[a["user"]]),
            "ts": to_datetime(a["ts"]),
            "amount": pl.Series(a["amount"], dtype=pl.Float64),
            "currency": pl.Series([currency] * len(a["ts"]), dtype=pl.Utf8),
            "payment_instrument": _instrument(a["instrument"], a["method"]),
            "method": pl.Series(vocab.PAYMENT_METHODS, dtype=pl.Utf8).gather(a["method"]),
            "status": pl.Series(np.where(a["declined"], "declined", "authorised"), dtype=pl.Utf8),
            "label_fraud": pl.Series(a["fraud"] >= 0, dtype=pl.Boolean),
            "fraud_pattern": _pattern(a["fraud"]),
        }
    )


def _instrument(tokens: np.ndarray, method: np.ndarray) -> pl.Series:
    prefix = pl.Series(METHOD_PREFIX, dtype=pl.Utf8).gather(method)
    return pl.select(pl.concat_str([pl.lit(prefix), pl.lit(pl.Series(tokens).cast(pl.Utf8))])).to_series()


def _pattern(fraud: np.ndarray) -> pl.Series:
    names = pl.Series(FRAUD_PATTERNS, dtype=pl.Utf8).gather(np.maximum(fraud, 0))
    return pl.select(pl.when(pl.lit(fraud) >= 0).then(pl.lit(names))).to_series()
