"""Training the risk model from the decision log, and replaying history through the engine.

Labels arrive late. At a training cut-off T an event's label is
  - fraud or legitimate, if a label (chargeback, analyst verdict) was *recorded* by T (`labelled_ms`);
  - legitimate, if no label arrived and the event is older than the label delay (T - delay);
  - unknown, otherwise: the event is left out rather than guessed legitimate.
Features come from the decision log, i.e. exactly what the engine computed when it decided, so nothing
from after the event can leak into them; labels recorded after T are never read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from shopmind.exceptions import InvalidInputError
from shopmind.risk.features import FEATURE_NAMES, logged_vector
from shopmind.risk.model import RiskModel
from shopmind.storage import schema

DAY_MS = 86_400_000
MAX_LABEL_DELAY_DAYS = 365


def checked_label_delay(days: float) -> float:
    """A label delay of 0 to 365 days. A negative one recorded replayed labels as known before their own
    events (labels are appended, never rewritten: the timeline stayed wrong) and trained a model on
    labels from the future; NaN failed later with an unrelated message (found by a review)."""
    if not (isinstance(days, (int, float)) and 0 <= days <= MAX_LABEL_DELAY_DAYS):
        raise InvalidInputError(f"label_delay_days must be a number of days from 0 to {MAX_LABEL_DELAY_DAYS}",
                                field="label_delay_days")
    return float(days)


@dataclass
class TrainingSet:
    X: np.ndarray
    y: np.ndarray
    event_ids: list[str]
    ts_ms: np.ndarray
    left_out_unknown: int


def training_set(store, cutoff_ms: int, label_delay_days: float = 7.0, since_ms: int = 0) -> TrainingSet:
    d, lab = schema.risk_decisions, schema.risk_labels
    with store.transaction() as conn:
        decisions = conn.execute(select(d.c.event_id, d.c.ts_ms, d.c.decided_ms, d.c.features)
                                 .where(d.c.ts_ms <= cutoff_ms, d.c.decided_ms <= cutoff_ms, d.c.ts_ms >= since_ms)
                                 .order_by(d.c.decided_ms)).all()
        labels = {e: f for e, f in conn.execute(select(lab.c.event_id, lab.c.fraud)  # latest known by T wins
                                                .where(lab.c.labelled_ms <= cutoff_ms)
                                                .order_by(lab.c.labelled_ms, lab.c.id))}
    latest: dict[str, Any] = {}
    for row in decisions:  # the last decision on an event is the one that stood
        latest[row.event_id] = row
    settled = cutoff_ms - label_delay_days * DAY_MS
    X, y, ids, ts = [], [], [], []
    unknown = 0
    for event_id, row in latest.items():
        if event_id in labels:
            target = float(labels[event_id])
        elif row.ts_ms <= settled:
            target = 0.0
        else:
            unknown += 1
            continue
        X.append(logged_vector(json.loads(row.features)))
        y.append(target)
        ids.append(event_id)
        ts.append(row.ts_ms)
    return TrainingSet(np.array(X, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)), np.array(y), ids,
                       np.array(ts, dtype=np.int64), unknown)


def train_risk_model(shop, actor: str, cutoff_ms: int | None = None, label_delay_days: float = 7.0,
                     n_rounds: int = 300, promote: bool = True) -> dict[str, Any]:
    """Fit on the decision log up to the cut-off and register the model (kind "risk")."""
    cutoff_ms = cutoff_ms if cutoff_ms is not None else int(time.time() * 1000)
    label_delay_days = checked_label_delay(label_delay_days)
    started = time.perf_counter()
    erasures_seen = shop.erasure.newest_receipt()
    # the lineage is read with the data, before training: a user erased while it trains is in both
    with shop.store.transaction() as conn:
        subjects = [p for (p,) in conn.execute(select(schema.risk_decisions.c.user_pseudonym).distinct()
                                               .where(schema.risk_decisions.c.ts_ms <= cutoff_ms)) if p]
    data = training_set(shop.store, cutoff_ms, label_delay_days)
    if len(data.y) == 0:
        raise InvalidInputError("no decided events with known labels before the cut-off: replay history "
                                "(`shopmind risk replay`) or wait for labels", field="cutoff")
    model = RiskModel(n_rounds=n_rounds).fit(data.X, data.y, FEATURE_NAMES)
    card = {"cutoff_ms": cutoff_ms, "label_delay_days": label_delay_days, "n_events": int(len(data.y)),
            "n_fraud": int(data.y.sum()), "left_out_unlabelled": data.left_out_unknown,
            "train_seconds": round(time.perf_counter() - started, 2), "features": len(FEATURE_NAMES), "actor": actor}
    version = shop.registry.register("risk", model, card, subjects, promote=promote,
                                     erased_since=lambda: shop.erasure.erased_after(erasures_seen))
    shop.risk.invalidate()
    return {"version": version, **card}


def replay_as_of_time(shop, share: float = 1 / 3) -> int:
    """When `share` of the stored orders and payments had happened: a behaviour model trained on the
    events before it gives the replayed orders after it their behaviour feature (`shopmind risk replay
    --behaviour-as-of auto`)."""
    o, p = schema.orders, schema.payments
    with shop.store.transaction() as conn:
        times = [t for (t,) in conn.execute(select(o.c.ts_ms))] + [t for (t,) in conn.execute(select(p.c.ts_ms))]
    if not times:
        raise InvalidInputError("no stored orders or payments to replay", field="behaviour_as_of")
    return int(np.quantile(np.array(times, dtype=np.int64), share))


def replay_history(shop, label_delay_days: float = 7.0, progress=None) -> dict[str, Any]:
    """Replay stored orders and payments, oldest first, through the current rules and model: fills the
    velocity windows and the decision log with point-in-time features, and records each stored fraud
    label as a chargeback arriving `label_delay_days` after the event. Stored tokens are used as they are."""
    from shopmind.risk.backtest import behaviour_feature_counts, history, history_engine

    label_delay_days = checked_label_delay(label_delay_days)
    engine = history_engine(shop, shop.velocity)
    decisions, labels, counts = [], [], {"allow": 0, "review": 0, "block": 0, "freeze_account": 0}
    delay_ms = int(label_delay_days * DAY_MS)
    d = schema.risk_decisions
    with shop.store.transaction() as conn:  # replaying again adds only what was not replayed before
        done = {e for (e,) in conn.execute(select(d.c.event_id).where(
            d.c.event_id.like("order:%") | d.c.event_id.like("payment:%")))}
    for event, tokens, fraud, _pattern in history(shop):
        if event.event_id in done:  # logged before; its later neighbours must still count it
            engine.record(event, tokens)
            continue
        out = engine.decide(event, tokens=tokens)
        row, _ = shop.risk._rows(event, out, engine)
        row["decided_ms"] = out.ts_ms  # as if decided live: training cut-offs compare against it
        decisions.append(row)
        counts[out.decision] += 1
        if fraud:
            labels.append({"event_id": event.event_id, "user_pseudonym": tokens.get("user"), "fraud": True,
                           "source": "import", "labelled_ms": out.ts_ms + delay_ms, "actor": "replay"})
        if progress:
            progress(1)
    with shop.store.transaction() as conn:
        for start in range(0, len(decisions), 5000):
            conn.execute(insert(schema.risk_decisions), decisions[start:start + 5000])
        if labels:
            conn.execute(insert(schema.risk_labels), labels)
    return {"replayed": len(decisions), "fraud_labels": len(labels), "decisions": counts,
            **behaviour_feature_counts(engine)}
