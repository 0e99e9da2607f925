"""Fraud-detection evaluation on labelled card transactions in the Fraud-Detection-Handbook raw layout.

The protocol follows the handbook (Le Borgne et al., "Reproducible Machine Learning for Credit Card
Fraud Detection - Practical Handbook"), re-implemented here:

* Time split, taken from the last days of the file: `train_days` of training, then `delay_days` whose
  labels are not yet known (no training, no testing), then `test_days` of testing. Earlier days are
  history for the features only; their labels are never used for training.
* Cards already known to be compromised leave the test set: for a test day d, a card is removed if it
  has a fraud on any day from the first training day up to d - delay - 1.
* Card precision@k: for each test day, every card gets the maximum score and the maximum label of its
  transactions that day; cards already found fraudulent in the top k of an earlier test day are left
  out; the daily value is the number of fraudulent cards among the k highest-scored ones, divided by k.
  The reported value is the mean over the test days.
* Average precision and ROC AUC are over the transactions of the (filtered) test set.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shopmind.exceptions import InvalidInputError
from shopmind.risk.handbook_features import FEATURE_SETS, compute_features

RAW_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD")

# Fixed LightGBM parameters (not tuned on any test window). A few hundred shallow-ish trees with a
# small learning rate, row and column subsampling, and a fixed seed for reproducibility.
LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "n_estimators": 400,
    "learning_rate": 0.03,
    "num_leaves": 31,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "n_jobs": 1,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}


# --------------------------------------------------------------------------------------------- loading

def _read(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise InvalidInputError(f"{path.name}: no such file", field="transactions")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=10_000, try_parse_dates=False)
        if suffix in {".parquet", ".pq"}:
            return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InvalidInputError(f"{path.name}: cannot be read as {suffix[1:]} ({type(exc).__name__})",
                                field="transactions") from exc
    raise InvalidInputError(f"{path.name}: unsupported file type {suffix or '(none)'}; use .csv or .parquet",
                            field="transactions")


def load_transactions(source: Any) -> pl.DataFrame:
    """Validate transactions in the raw layout and return them as a polars frame of exactly
    RAW_COLUMNS, sorted by time. `source` is a path (.csv or .parquet), a polars or a pandas frame.
    Other columns (such as TX_FRAUD_SCENARIO) are dropped. Raises InvalidInputError naming the column."""
    if isinstance(source, (str, Path)):
        df = _read(Path(source))
    elif isinstance(source, pl.DataFrame):
        df = source
    elif hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas
        df = pl.from_pandas(source.reset_index(drop=True)[[c for c in source.columns if c in RAW_COLUMNS]])
    else:
        raise InvalidInputError("transactions must be a file path or a data frame", field="transactions")
    for col in RAW_COLUMNS:
        if col not in df.columns:
            raise InvalidInputError(f"missing column {col}", field=col)
    df = df.select(RAW_COLUMNS)
    if df.height == 0:
        raise InvalidInputError("no transactions", field="TRANSACTION_ID")

    exprs = []
    for col in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID"):
        if df[col].dtype not in (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32,
                                 pl.UInt64, pl.Utf8, pl.String, pl.Categorical):
            raise InvalidInputError(f"{col} must hold integer or text ids", field=col)
        exprs.append(pl.col(col).cast(pl.Utf8) if df[col].dtype == pl.Categorical else pl.col(col))
    df = df.with_columns(exprs)
    ts = df["TX_DATETIME"]
    if ts.dtype == pl.Date:
        ts = ts.cast(pl.Datetime("us"))
    elif ts.dtype in (pl.Utf8, pl.String):
        parsed = ts.str.to_datetime(strict=False, time_unit="us")
        if parsed.null_count() > ts.null_count():
            raise InvalidInputError(f"TX_DATETIME: {parsed.null_count() - ts.null_count()} value(s) are not "
                                    "date-times (expected e.g. 2018-07-25 00:00:29)", field="TX_DATETIME")
        ts = parsed
    elif not isinstance(ts.dtype, pl.Datetime):
        raise InvalidInputError("TX_DATETIME must hold date-times", field="TX_DATETIME")
    if ts.dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    df = df.with_columns(ts.cast(pl.Datetime("us")).alias("TX_DATETIME"))

    if not df["TX_AMOUNT"].dtype.is_numeric():
        raise InvalidInputError("TX_AMOUNT must be numeric", field="TX_AMOUNT")
    df = df.with_columns(pl.col("TX_AMOUNT").cast(pl.Float64))
    amount = df["TX_AMOUNT"]
    if amount.null_count() or not bool(amount.is_finite().all()) or float(amount.min()) < 0:
        raise InvalidInputError("TX_AMOUNT must be a finite, non-negative number on every row", field="TX_AMOUNT")
    fraud = df["TX_FRAUD"]
    if fraud.dtype == pl.Boolean:
        fraud = fraud.cast(pl.Int8)
    if not fraud.dtype.is_numeric() or fraud.null_count() or not bool(fraud.is_in([0, 1]).all()):
        raise InvalidInputError("TX_FRAUD must be 0 or 1 on every row", field="TX_FRAUD")
    df = df.with_columns(fraud.cast(pl.Int8).alias("TX_FRAUD"))
    for col in RAW_COLUMNS:
        n = df[col].null_count()
        if n:
            raise InvalidInputError(f"{col}: {n} empty value(s)", field=col)
    if df["TRANSACTION_ID"].n_unique() != df.height:
        raise InvalidInputError(f"TRANSACTION_ID: {df.height - df['TRANSACTION_ID'].n_unique()} duplicate id(s)",
                                field="TRANSACTION_ID")
    return df.sort(["TX_DATETIME", "TRANSACTION_ID"])


# ----------------------------------------------------------------------------------------------- split

@dataclass(frozen=True)
class Split:
    """Windows of a handbook split (inclusive calendar days) and row masks over the loaded frame."""

    history_start: dt.date | None
    train_start: dt.date
    train_end: dt.date
    delay_start: dt.date | None
    delay_end: dt.date | None
    test_start: dt.date
    test_end: dt.date
    train_mask: np.ndarray = field(repr=False)
    test_window_mask: np.ndarray = field(repr=False)
    test_mask: np.ndarray = field(repr=False)  # test window minus cards known to be compromised

    def windows(self) -> dict[str, str | None]:
        return {k: (None if v is None else v.isoformat()) for k, v in (
            ("history_start", self.history_start), ("train_start", self.train_start), ("train_end", self.train_end),
            ("delay_start", self.delay_start), ("delay_end", self.delay_end),
            ("test_start", self.test_start), ("test_end", self.test_end))}


def handbook_split(df: pl.DataFrame, *, train_days: int = 7, delay_days: int = 7, test_days: int = 7) -> Split:
    """The handbook's time split, with the windows taken from the last days of `df` (loaded frame)."""
    # delay_days is also the label delay of the features, whose label windows end at t - delay_days
    # inclusive: at 0 each transaction would read its own label (AP 1.0). Chargebacks take days anyway.
    for name, value, low in (("train_days", train_days, 1), ("delay_days", delay_days, 1), ("test_days", test_days, 1)):
        if not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}", field=name)
    day = df["TX_DATETIME"].dt.date()
    first, last = day.min(), day.max()
    test_start = last - dt.timedelta(days=test_days - 1)
    train_end = test_start - dt.timedelta(days=delay_days + 1)
    train_start = train_end - dt.timedelta(days=train_days - 1)
    if train_start < first:
        span = (last - first).days + 1
        raise InvalidInputError(f"the transactions cover {span} day(s); the split needs at least "
                                f"{train_days + delay_days + test_days} (train + delay + test)", field="TX_DATETIME")
    day_np = day.to_numpy()
    train = (day_np >= np.datetime64(train_start)) & (day_np <= np.datetime64(train_end))
    window = day_np >= np.datetime64(test_start)
    if not train.any() or not window.any():
        raise InvalidInputError("the train or the test window holds no transactions", field="TX_DATETIME")

    # Known-compromised cards: fraud on a day in [train_start, d - delay - 1] for test day d.
    fraud = df["TX_FRAUD"].to_numpy() == 1
    first_fraud = (pl.DataFrame({"card": df["CUSTOMER_ID"], "day": day})
                   .filter(pl.Series(fraud & (day_np >= np.datetime64(train_start))))
                   .group_by("card").agg(pl.col("day").min().alias("first_fraud_day")))
    known_until = day - dt.timedelta(days=delay_days + 1)
    joined = (pl.DataFrame({"card": df["CUSTOMER_ID"], "known_until": known_until})
              .join(first_fraud, on="card", how="left", maintain_order="left"))
    compromised = (joined["first_fraud_day"] <= joined["known_until"]).fill_null(False).to_numpy()
    delay_start = train_end + dt.timedelta(days=1) if delay_days else None
    return Split(history_start=first if first < train_start else None, train_start=train_start, train_end=train_end,
                 delay_start=delay_start, delay_end=test_start - dt.timedelta(days=1) if delay_days else None,
                 test_start=test_start, test_end=last, train_mask=train, test_window_mask=window,
                 test_mask=window & ~compromised)


# --------------------------------------------------------------------------------------------- metrics

def _check_scores(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y, dtype=np.int64), np.asarray(s, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-d and of the same length")
    return y, s


def average_precision(y_true, scores) -> float:
    """Average precision: sum over distinct score thresholds of (recall gain) x (precision), ties grouped.
    Same definition as sklearn.metrics.average_precision_score. NaN if there is no positive."""
    y, s = _check_scores(y_true, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * precision))


def roc_auc(y_true, scores) -> float:
    """ROC AUC as the probability that a random positive outranks a random negative (ties count 1/2)."""
    y, s = _check_scores(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = pl.Series(s).rank("average").to_numpy()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def card_precision_at_k(days, cards, labels, scores, k: int = 100) -> tuple[float, list[float], list[int]]:
    """Handbook card precision@k: the mean over days of the daily card precision@k, where cards detected
    as fraudulent (fraudulent and in the top k) on an earlier day are left out of later days.
    Returns (mean, per-day values, number of fraudulent cards per day after that removal).
    Ties between cards with the same score are broken by the card id, for reproducibility."""
    if k < 1:
        raise InvalidInputError("top_k must be >= 1", field="top_k")
    frame = pl.DataFrame({"day": days, "card": cards, "y": np.asarray(labels, dtype=np.int64),
                          "s": np.asarray(scores, dtype=np.float64)})
    per_card = (frame.group_by(["day", "card"]).agg(pl.col("s").max(), pl.col("y").max())
                .sort(["day", "s", "card"], descending=[False, True, False]))
    detected: set = set()
    values, n_fraud_cards = [], []
    for (_day,), part in per_card.group_by(["day"], maintain_order=True):
        if detected:
            part = part.filter(~pl.col("card").is_in(list(detected)))
        n_fraud_cards.append(int(part["y"].sum()))
        top = part.head(k)
        hits = top.filter(pl.col("y") == 1)["card"].to_list()
        values.append(len(hits) / k)
        detected.update(hits)
    return (float(np.mean(values)) if values else math.nan), values, n_fraud_cards


def _ranking_metrics(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    try:
        from sklearn.metrics import average_precision_score, roc_auc_score
    except ImportError:  # pragma: no cover - sklearn is optional
        return average_precision(y, s), roc_auc(y, s)
    if y.min() == y.max():
        return (average_precision(y, s), math.nan)
    return float(average_precision_score(y, s)), float(roc_auc_score(y, s))


# ------------------------------------------------------------------------------------------ evaluation

@dataclass
class Evaluation:
    report: dict[str, Any]
    scores: pl.DataFrame  # TRANSACTION_ID, score, in_test_set for every transaction of the test window


def _train_lightgbm(x: np.ndarray, y: np.ndarray, seed: int):
    try:
        import lightgbm as lgb
    except ImportError as exc:  # pragma: no cover
        raise InvalidInputError("the evaluation needs lightgbm: pip install lightgbm", field="model") from exc
    model = lgb.LGBMClassifier(**LIGHTGBM_PARAMS, random_state=seed)
    model.fit(x, y)
    return model


def run_evaluation(source: Any, *, train_days: int = 7, delay_days: int = 7, test_days: int = 7,
                   top_k: int = 100, seed: int = 0, feature_set: str = "shopmind") -> Evaluation:
    """Load, split, compute point-in-time features, train LightGBM on the train window and score the test
    window. Returns the report (metrics, counts, windows, feature names, wall times) and the scores."""
    if feature_set not in FEATURE_SETS:
        raise InvalidInputError(f"feature set must be one of {', '.join(FEATURE_SETS)}", field="feature_set")
    if not isinstance(top_k, int) or top_k < 1:
        raise InvalidInputError("top_k must be an integer >= 1", field="top_k")
    started = time.perf_counter()
    df = load_transactions(source)
    loaded = time.perf_counter()
    split = handbook_split(df, train_days=train_days, delay_days=delay_days, test_days=test_days)
    y = df["TX_FRAUD"].to_numpy().astype(np.int64)
    if y[split.train_mask].min() == y[split.train_mask].max():
        raise InvalidInputError("the train window needs both fraudulent and genuine transactions", field="TX_FRAUD")
    if not split.test_mask.any():  # every card in the test window had a fraud known before it
        raise InvalidInputError("no transaction is left to test: every card of the test window is known to be "
                                "compromised before it (the handbook removes those); give more days", field="TX_DATETIME")
    features = compute_features(df, feature_set, delay_days)
    featured = time.perf_counter()
    x = features.to_numpy().astype(np.float32)
    model = _train_lightgbm(x[split.train_mask], y[split.train_mask], seed)
    trained = time.perf_counter()
    window_scores = model.predict_proba(x[split.test_window_mask])[:, 1]
    predicted = time.perf_counter()

    window = df.filter(pl.Series(split.test_window_mask))
    in_test = split.test_mask[split.test_window_mask]
    scores = pl.DataFrame({"TRANSACTION_ID": window["TRANSACTION_ID"], "score": window_scores,
                           "in_test_set": in_test})
    yt, st = y[split.test_mask], window_scores[in_test]
    ap, auc = _ranking_metrics(yt, st)
    test = window.filter(pl.Series(in_test))
    cp, cp_days, fraud_cards = card_precision_at_k(test["TX_DATETIME"].dt.date(), test["CUSTOMER_ID"],
                                                   yt, st, top_k)
    done = time.perf_counter()
    report = {
        "model": "lightgbm",
        "feature_set": feature_set,
        "metrics": {"average_precision": ap, f"card_precision@{top_k}": cp, "auc": auc},
        "card_precision_per_day": cp_days,
        "fraud_cards_per_day": fraud_cards,
        "counts": {
            "transactions": df.height,
            "history": int((~split.train_mask & (df["TX_DATETIME"].dt.date() < split.train_start).to_numpy()).sum()),
            "train": int(split.train_mask.sum()), "train_frauds": int(y[split.train_mask].sum()),
            "test_window": int(split.test_window_mask.sum()),
            "test_window_frauds": int(y[split.test_window_mask].sum()),
            "test": int(split.test_mask.sum()), "test_frauds": int(yt.sum()),
            "removed_known_compromised": int(split.test_window_mask.sum() - split.test_mask.sum()),
        },
        "windows": split.windows(),
        "split": {"train_days": train_days, "delay_days": delay_days, "test_days": test_days, "top_k": top_k},
        "feature_names": features.columns,
        "params": {**LIGHTGBM_PARAMS, "random_state": seed},
        "seed": seed,
        "wall_s": {"load": round(loaded - started, 3), "features": round(featured - loaded, 3),
                   "train": round(trained - featured, 3), "predict": round(predicted - trained, 3),
                   "total": round(done - started, 3)},
    }
    return Evaluation(report=report, scores=scores)


def evaluate_transactions(frame_or_path: Any, *, train_days: int = 7, delay_days: int = 7, test_days: int = 7,
                          top_k: int = 100, seed: int = 0, feature_set: str = "shopmind") -> dict[str, Any]:
    """Evaluate the default fraud pipeline (point-in-time features + LightGBM) with the handbook's split
    and metrics; returns the report of `run_evaluation` (use that for the per-transaction scores)."""
    return run_evaluation(frame_or_path, train_days=train_days, delay_days=delay_days, test_days=test_days,
                          top_k=top_k, seed=seed, feature_set=feature_set).report
