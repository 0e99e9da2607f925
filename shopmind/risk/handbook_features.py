"""Point-in-time features for card transactions in the Fraud-Detection-Handbook raw layout.

Every feature of a transaction at time t is computed from the raw columns only, and only from what a
risk team could know at t:

* behaviour features (amounts, counts, times) use transactions strictly before t (the handbook's own
  customer features also include the current transaction, as the handbook defines them);
* label features (known frauds on a terminal or a card) use only labels of transactions at least
  `delay_days` old, i.e. with a timestamp <= t - delay. A label younger than that is never read.

Two feature sets are offered: ``handbook`` (the 15 features of the handbook's baseline, recomputed here
from the raw columns) and ``shopmind`` (the default: richer behaviour and delayed-label features).
"""

from __future__ import annotations

import numpy as np
import polars as pl

DAY = 86_400  # seconds
NO_EVENT_DAYS = 999.0  # "days since" when there was no such event in the look-back

HANDBOOK_FEATURES = (
    "TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW", "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW", "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW",
)
FEATURE_SETS = ("shopmind", "handbook")


class WindowIndex:
    """Sums of per-transaction values over time windows of each transaction's own entity (card, terminal).

    Rows are keyed by (entity, time) in one sorted int64 array, so the sum over any window (lo, hi] of a
    row's entity is two binary searches into running sums: O(log n) per row, no Python loop.
    """

    def __init__(self, codes: np.ndarray, times: np.ndarray, pad: int):
        self.t0 = int(times.min()) - pad
        self.span = int(times.max()) - self.t0 + pad + 2
        self.codes = codes.astype(np.int64)
        keys = self.codes * self.span + (times.astype(np.int64) - self.t0)
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.times = times.astype(np.int64)[self.order]
        self.start = np.searchsorted(self.keys, self.codes * self.span, side="left")  # first row of the entity

    def _key(self, t: np.ndarray) -> np.ndarray:
        return self.codes * self.span + (np.clip(t, self.t0, None) - self.t0)

    def position(self, t: np.ndarray, inclusive: bool) -> np.ndarray:
        """Per row: index into the sorted rows just past its entity's rows at times <= t (< t)."""
        # Queried in (entity, time) order, where they are nearly sorted: far fewer cache misses.
        found = np.empty(len(t), dtype=np.int64)
        found[self.order] = np.searchsorted(self.keys, self._key(t)[self.order], side="right" if inclusive else "left")
        return found

    def prefix(self, values: np.ndarray) -> np.ndarray:
        """Running sums restarted at each entity, so that a sum over an entity's past never depends on
        any other row (not even in its floating-point rounding)."""
        sorted_values = pl.DataFrame({"g": self.codes[self.order], "v": values[self.order].astype(np.float64)})
        running = sorted_values.select(pl.col("v").cum_sum().over("g"))["v"].to_numpy()
        return np.concatenate([[0.0], running])

    def through_self(self) -> np.ndarray:
        """Per row: index just past the row itself in the sorted rows: its entity's rows up to and
        including it, and of the rows at its own time only those before it in the input (as a rolling
        window over time-sorted rows counts them), never a later transaction of the same second."""
        found = np.empty(len(self.order), dtype=np.int64)
        found[self.order] = np.arange(1, len(self.order) + 1)
        return found

    def window_sums(self, prefixes: list[np.ndarray], lo: np.ndarray, hi: np.ndarray | None,
                    hi_inclusive: bool = True) -> list[np.ndarray]:
        """Per row and prefix: the sum over its entity's rows with lo < time <= hi (< hi if not hi_inclusive);
        hi None: up to and including the row itself (`through_self`)."""
        upper = self.through_self() if hi is None else self.position(hi, hi_inclusive)
        lower = self.position(lo, True)
        has_upper, has_lower = upper > self.start, lower > self.start
        return [np.where(has_upper, p[upper], 0.0) - np.where(has_lower, p[lower], 0.0) for p in prefixes]


def _codes(values: pl.Series) -> np.ndarray:
    return values.rank("dense").to_numpy().astype(np.int64) - 1


def _safe_div(a: np.ndarray, b: np.ndarray, fill: float = 0.0) -> np.ndarray:
    out = np.full(a.shape, fill, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _base(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t = df["TX_DATETIME"].dt.epoch("s").to_numpy().astype(np.int64)
    return (t, _codes(df["CUSTOMER_ID"]), _codes(df["TERMINAL_ID"]),
            df["TX_AMOUNT"].to_numpy().astype(np.float64), df["TX_FRAUD"].to_numpy().astype(np.float64))


def handbook_features(df: pl.DataFrame, delay_days: int = 7) -> pl.DataFrame:
    """The handbook's 15 baseline features, recomputed from the raw columns (same definitions:
    customer windows (t-n days, t] including the current transaction; terminal counts and fraud
    ratios over (t-delay-n, t-delay] days)."""
    t, cust, term, amount, fraud = _base(df)
    ones = np.ones_like(amount)
    delay = delay_days * DAY
    cidx, tidx = WindowIndex(cust, t, 31 * DAY), WindowIndex(term, t, (31 + delay_days) * DAY)
    c_n, c_amt = cidx.prefix(ones), cidx.prefix(amount)
    t_n, t_f = tidx.prefix(ones), tidx.prefix(fraud)
    cols: dict[str, np.ndarray] = {"TX_AMOUNT": amount}
    dt = df["TX_DATETIME"]
    cols["TX_DURING_WEEKEND"] = (dt.dt.weekday() >= 6).to_numpy().astype(np.float64)  # polars: Monday=1
    cols["TX_DURING_NIGHT"] = (dt.dt.hour() <= 6).to_numpy().astype(np.float64)
    for n in (1, 7, 30):
        cnt, total = cidx.window_sums([c_n, c_amt], t - n * DAY, None)  # through the transaction itself
        cols[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = cnt
        cols[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = _safe_div(total, cnt)
    for n in (1, 7, 30):
        lo, hi = t - delay - n * DAY, t - delay
        cnt, frauds = tidx.window_sums([t_n, t_f], lo, hi)
        cols[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = cnt
        cols[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = _safe_div(frauds, cnt)
    return pl.DataFrame({name: cols[name] for name in HANDBOOK_FEATURES})


def _known_fraud_times(idx: WindowIndex, fraud: np.ndarray, t_known: np.ndarray,
                       lookback: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, over its entity's frauds with lookback-ago < time <= t_known: whether there is one, and
    the times of the latest and of the earliest such fraud (t_known where there is none)."""
    f_rows = fraud[idx.order] > 0
    f_keys, f_times = idx.keys[f_rows], idx.times[f_rows]
    hi = np.searchsorted(f_keys, idx._key(t_known), side="right")
    lo = np.searchsorted(f_keys, idx._key(t_known - lookback), side="right")
    has = hi > lo
    last, first = t_known.copy(), t_known.copy()
    if f_times.size:
        last[has], first[has] = f_times[hi[has] - 1], f_times[lo[has]]
    return has, last, first


def shopmind_features(df: pl.DataFrame, delay_days: int = 7) -> pl.DataFrame:
    """The default feature set. Behaviour windows use transactions strictly before t; label windows
    use labels known at t (transactions at or before t - delay)."""
    t, cust, term, amount, fraud = _base(df)
    ones = np.ones_like(amount)
    delay = delay_days * DAY
    dt = df["TX_DATETIME"]
    cols: dict[str, np.ndarray] = {
        "amount": amount,
        "hour": (dt.dt.hour().cast(pl.Float64) + dt.dt.minute().cast(pl.Float64) / 60).to_numpy(),
        "is_weekend": (dt.dt.weekday() >= 6).to_numpy().astype(np.float64),
        "is_night": (dt.dt.hour() <= 6).to_numpy().astype(np.float64),
    }

    # Card (customer) behaviour, strictly before t.
    cidx = WindowIndex(cust, t, 31 * DAY)
    c_n, c_amt, c_sq = cidx.prefix(ones), cidx.prefix(amount), cidx.prefix(amount * amount)
    for n in (1, 7, 30):
        cnt, total, total_sq = cidx.window_sums([c_n, c_amt, c_sq], t - n * DAY, t, hi_inclusive=False)
        mean = _safe_div(total, cnt, np.nan)
        cols[f"card_n_{n}d"] = cnt
        cols[f"card_mean_{n}d"] = mean
        cols[f"card_amount_ratio_{n}d"] = amount / np.where(mean > 0, mean, np.nan)
        if n > 1:
            sq = _safe_div(total_sq, cnt, np.nan)
            std = np.sqrt(np.clip(sq - mean * mean, 0.0, None))
            usable = (cnt >= 2) & (std > 1e-6 * np.abs(np.nan_to_num(mean)))
            cols[f"card_amount_z_{n}d"] = (amount - mean) / np.where(usable, std, np.nan)
    cols.update(_card_order_stats(df, t))

    # Previous transaction of the card.
    prev = cidx.position(t, inclusive=False) - 1
    cols["card_hours_since_prev"] = np.where(prev >= cidx.start, (t - cidx.times[np.clip(prev, 0, None)]) / 3600.0,
                                             np.nan)

    # Unusual spending earlier on the card: how many of its past transactions were > 3x its median.
    unusual = (cols["card_amount_ratio_median_30d"] > 3.0).astype(np.float64)
    c_unusual = cidx.prefix(unusual)
    for n in (7, 30):
        cols[f"card_n_unusual_{n}d"] = cidx.window_sums([c_unusual], t - n * DAY, t, hi_inclusive=False)[0]

    # Card-terminal pair: has the card used this terminal before?
    pair = _codes(pl.Series(cust * (int(term.max()) + 1) + term))
    pidx = WindowIndex(pair, t, 31 * DAY)
    cols["pair_n_30d"] = pidx.window_sums([pidx.prefix(ones)], t - 30 * DAY, t, hi_inclusive=False)[0]

    # Terminal traffic, strictly before t.
    tidx = WindowIndex(term, t, (31 + delay_days) * DAY)
    t_n, t_amt, t_f = tidx.prefix(ones), tidx.prefix(amount), tidx.prefix(fraud)
    for n in (1, 7, 30):
        cnt, total = tidx.window_sums([t_n, t_amt], t - n * DAY, t, hi_inclusive=False)
        cols[f"terminal_n_{n}d"] = cnt
    t_mean30 = _safe_div(total, cols["terminal_n_30d"], np.nan)
    cols["terminal_amount_ratio_30d"] = amount / np.where(t_mean30 > 0, t_mean30, np.nan)

    # Terminal labels known at t: transactions at or before t - delay.
    known = t - delay
    for n in (1, 7, 14, 30):
        cnt, frauds = tidx.window_sums([t_n, t_f], known - n * DAY, known)
        cols[f"terminal_known_frauds_{n}d"] = frauds
        cols[f"terminal_known_fraud_rate_{n}d"] = _safe_div(frauds, cnt, 0.0)
    has, last, first = _known_fraud_times(tidx, fraud, known, 30 * DAY)
    cols["terminal_days_since_last_known_fraud"] = np.where(has, (t - last) / DAY, NO_EVENT_DAYS)
    cols["terminal_days_since_first_known_fraud_30d"] = np.where(has, (t - first) / DAY, NO_EVENT_DAYS)
    # Since its first known fraud (30-day look-back), was the terminal consistently fraudulent (a compromised
    # terminal) or did it see one fraudulent card among many genuine ones (a compromised card)?
    n_since, f_since = tidx.window_sums([t_n, t_f], first - 1, known)
    cols["terminal_known_n_since_first_fraud"] = np.where(has, n_since, 0.0)
    cols["terminal_known_fraud_rate_since_first_fraud"] = np.where(has, _safe_div(f_since, n_since), 0.0)

    # Card labels known at t.
    cols["card_known_frauds_30d"] = cidx.window_sums([cidx.prefix(fraud)], known - 30 * DAY, known)[0]
    return pl.DataFrame(cols)


def _card_order_stats(df: pl.DataFrame, t: np.ndarray) -> dict[str, np.ndarray]:
    """Max and median of the card's amounts over the previous 30 days (current transaction excluded)."""
    frame = pl.DataFrame({"row": np.arange(len(t)), "ts": df["TX_DATETIME"], "card": df["CUSTOMER_ID"],
                          "amount": df["TX_AMOUNT"].cast(pl.Float64)}).sort(["card", "ts", "row"])
    stats = frame.rolling(index_column="ts", period="30d", closed="left", group_by="card").agg(
        pl.col("amount").max().alias("max30"), pl.col("amount").median().alias("median30"))
    # rows of one card at one instant share their window: join back on (card, ts), then restore row order
    out = frame.join(stats.unique(["card", "ts"]), on=["card", "ts"], how="left").sort("row")
    amount = df["TX_AMOUNT"].to_numpy().astype(np.float64)
    max30 = out["max30"].fill_null(np.nan).to_numpy().astype(np.float64)
    med30 = out["median30"].fill_null(np.nan).to_numpy().astype(np.float64)
    return {
        "card_max_30d": max30,
        "card_median_30d": med30,
        "card_amount_ratio_max_30d": amount / np.where(max30 > 0, max30, np.nan),
        "card_amount_ratio_median_30d": amount / np.where(med30 > 0, med30, np.nan),
    }


def compute_features(df: pl.DataFrame, feature_set: str = "shopmind", delay_days: int = 7) -> pl.DataFrame:
    """Features for every row of `df` (validated raw layout), in the same row order."""
    if feature_set == "handbook":
        return handbook_features(df, delay_days)
    if feature_set == "shopmind":
        return shopmind_features(df, delay_days)
    raise ValueError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
