"""Backtests and threshold tuning: what would a rules + model version have decided on past events?

A backtest replays stored orders and payments, oldest first, through a fresh engine (its own in-process
velocity windows, the chosen model version, the current rules and thresholds) and writes nothing. It
reports the decisions against the known labels and what they would have cost under the shop's cost
model, and suggests the review/block thresholds that would have cost least on that period.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
from sqlalchemy import select

from shopmind.risk.engine import RiskEngine
from shopmind.risk.schemas import RiskEvent
from shopmind.risk.velocity import MemoryVelocityStore
from shopmind.storage import schema


@dataclass(frozen=True)
class CostModel:
    """What each outcome costs the shop, in the order currency (set per shop; defaults are examples)."""

    review_cost: float = 3.0          # analyst time per reviewed order
    margin: float = 0.25              # share of a good order's amount lost when it is blocked
    reviewed_fraud_caught: float = 0.9  # analysts stop this share of the fraud they review


def history(shop, since_ms: int = 0, until_ms: int | None = None) -> Iterator[tuple[RiskEvent, dict[str, str], bool, str | None]]:
    """Stored orders and payments as (event, stored tokens, fraud label, fraud pattern), oldest first."""
    o, p = schema.orders, schema.payments
    until = until_ms if until_ms is not None else 2**62
    with shop.store.transaction() as conn:
        rows = [("order", r) for r in conn.execute(select(o).where(o.c.ts_ms <= until))]
        rows += [("payment", r) for r in conn.execute(select(p).where(p.c.ts_ms <= until))]
    rows.sort(key=lambda kr: kr[1].ts_ms)
    for kind, r in rows:
        if r.ts_ms < since_ms:
            continue
        items = json.loads(r.items) if kind == "order" else []
        event = RiskEvent(
            event_id=f"{kind}:{r.order_id if kind == 'order' else r.payment_id}", kind=kind, ts_ms=r.ts_ms,
            amount=r.amount, currency=r.currency, ip_country=getattr(r, "ip_country", None),
            shipping_country=getattr(r, "shipping_country", None),
            items=[{"item_id": str(i["item_id"]), "price": float(i.get("price") or 0), "quantity": int(i.get("quantity") or 1)}
                   for i in items if i.get("item_id")])
        tokens = {"user": r.user_pseudonym} if r.user_pseudonym else {}
        if r.instrument_token:
            tokens["card"] = r.instrument_token
        if kind == "order" and r.device_token:
            tokens["device"] = r.device_token
        yield event, tokens, bool(r.label_fraud), r.fraud_pattern


def expected_cost(scores: np.ndarray, fraud: np.ndarray, amounts: np.ndarray, review: float, block: float,
                  cost: CostModel) -> float:
    blocked = scores >= block
    reviewed = (scores >= review) & ~blocked
    allowed = ~(blocked | reviewed)
    fraud_loss = amounts[allowed & fraud].sum() + (1 - cost.reviewed_fraud_caught) * amounts[reviewed & fraud].sum()
    friction = cost.margin * amounts[blocked & ~fraud].sum()
    return float(fraud_loss + friction + cost.review_cost * reviewed.sum())


def tune_thresholds(scores: np.ndarray, fraud: np.ndarray, amounts: np.ndarray, cost: CostModel,
                    max_review_share: float = 0.05) -> dict[str, float]:
    """The (review, block) pair on a grid of score quantiles with the least expected cost, sending at most
    `max_review_share` of events to review (the analysts' capacity)."""
    grid = np.unique(np.quantile(scores, np.linspace(0.80, 1.0, 81)))
    best = {"review": 1.0, "block": 1.0, "cost": expected_cost(scores, fraud, amounts, 1.0, 1.0 + 1e-9, cost)}
    for review in grid:
        for block in grid[grid >= review]:
            reviewed_share = float(((scores >= review) & (scores < block)).mean())
            if reviewed_share > max_review_share:
                continue
            c = expected_cost(scores, fraud, amounts, float(review), float(block), cost)
            if c < best["cost"]:
                best = {"review": float(review), "block": float(block), "cost": c}
    return best


def backtest(shop, since_ms: int = 0, until_ms: int | None = None, model_version: str | None = None,
             cost: CostModel = CostModel()) -> dict[str, Any]:
    live = shop.risk.engine()
    model = live.model
    if model_version is not None:
        from shopmind.risk.model import RiskModel

        model = RiskModel.load(shop.registry.root / "risk" / model_version / "model")
    engine = RiskEngine(shop.pseudonyms, MemoryVelocityStore(), live.rules, live.lists, live.thresholds, model=model,
                        model_version=model_version or live.model_version, profile=shop.risk._profile)
    scores, fraud, amounts, decisions = [], [], [], []
    for event, tokens, label, _pattern in history(shop, 0, until_ms):
        out = engine.decide(event, tokens=tokens)  # earlier events only warm the windows
        if event.ts_ms is not None and event.ts_ms >= since_ms:
            scores.append(out.score)
            fraud.append(label)
            amounts.append(event.amount)
            decisions.append(out.decision)
    s, f, a = np.array(scores), np.array(fraud, dtype=bool), np.array(amounts)
    d = np.array(decisions)
    stopped = np.isin(d, ("block", "freeze_account"))
    reviewed = d == "review"
    thresholds = live.thresholds
    return {
        "events": int(len(s)), "fraud": int(f.sum()), "model_version": engine.model_version,
        "rules_version": live.rules.version, "thresholds": {"review": thresholds.review, "block": thresholds.block},
        "decisions": {k: int((d == k).sum()) for k in ("allow", "review", "block", "freeze_account")},
        "fraud_stopped": int((stopped & f).sum()), "fraud_reviewed": int((reviewed & f).sum()),
        "good_blocked": int((stopped & ~f).sum()), "good_reviewed": int((reviewed & ~f).sum()),
        "fraud_amount_allowed": float(a[(d == "allow") & f].sum()),
        "cost": expected_cost(s, f, a, thresholds.review, thresholds.block, cost) if len(s) else 0.0,
        "cost_model": asdict(cost),
        "suggested_thresholds": tune_thresholds(s, f, a, cost) if len(s) and f.any() else None,
    }
