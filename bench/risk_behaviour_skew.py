"""How far a replayed order's behaviour feature drifts from what live traffic gets, with and without
the point-in-time rule (docs/risk.md, "The behaviour-model feature").

    .venv/bin/python bench/risk_behaviour_skew.py [--users 5000] [--days 60] [--budget 120]
                                                  [--as-of-budget 60] [--seed 11] [--out FILE]

A generated shop (the demo's size by default). "Today" is when 75% of its orders and payments had
happened: today's behaviour model trains on every event before it. The orders after it stand in for
live traffic: today's model never saw them, as it never sees a live order. The orders between the
as-of time (a third of the history, `replay --behaviour-as-of auto`) and today are what a replay
logs to train the risk model on. For each order that lists items, from a user with history:

  - replay, today's model (the rule before 2026-12-07): today's model, which trained on the order;
  - replay, as-of model (the rule now): a model trained on the events before the as-of time only;
  - live: today's model on the orders after today.

Printed per source: orders, median feature of legitimate and of fraudulent orders, and the feature's
AUC for fraud alone (a higher share of the catalog ranked above the ordered items = more suspicious).
A risk model learns from the replay rows and is served the live ones: the closer the replay rows are
to the live ones, the less it is misled.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--budget", type=float, default=120, help="today's behaviour model: training budget, s")
    ap.add_argument("--as-of-budget", type=float, default=60, help="the as-of model: training budget, s")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import polars as pl
    from sqlalchemy import select

    from shopmind.config import load_settings
    from shopmind.risk.backtest import AsOfUnusualness
    from shopmind.risk.schemas import RiskEvent
    from shopmind.risk.training import replay_as_of_time
    from shopmind.shop import Shop
    from shopmind.storage import schema
    from shopmind.synth import generate_shop, write_shop
    from shopmind.training.pipeline import train_behaviour_as_of

    started = time.time()
    home = Path(tempfile.mkdtemp(prefix="skew-"))
    shop, _ = Shop.init(load_settings(home=home / "home", cache_url="memory://"))
    paths = write_shop(generate_shop(n_users=args.users, days=args.days, seed=args.seed), home / "data", "parquet")
    for kind in ("items", "users", "events", "orders", "payments"):
        shop.import_file(paths[kind], kind, actor="bench")
    today = replay_as_of_time(shop, 0.75)
    as_of = replay_as_of_time(shop)
    trained_today = train_behaviour_as_of(shop, today, "bench", args.budget, promote=True)  # serves
    trained_as_of = train_behaviour_as_of(shop, as_of, "bench", args.as_of_budget)

    o = schema.orders
    with shop.store.transaction() as conn:
        orders = conn.execute(select(o.c.order_id, o.c.user_pseudonym, o.c.ts_ms, o.c["items"], o.c.label_fraud,
                                     o.c.fraud_pattern).order_by(o.c.ts_ms)).all()
    sources = {"today": AsOfUnusualness(shop, [(trained_today["data_window_ms"][1], trained_today["version"])]),
               "as_of": AsOfUnusualness(shop, [(trained_as_of["data_window_ms"][1], trained_as_of["version"])])}
    # AsOfUnusualness refuses a version that saw the event; the old rule used today's model anyway
    sources["today_unguarded"] = AsOfUnusualness(shop, [(-1, trained_today["version"])])
    rows: dict[str, list[tuple[float, bool, str | None]]] = {"replay, today's model (before)": [],
                                                             "replay, as-of model (now)": [], "live": []}
    for r in orders:
        items = [{"item_id": str(i["item_id"]), "price": 1.0} for i in json.loads(r.items) if i.get("item_id")]
        if not items or not r.user_pseudonym or r.ts_ms <= as_of:
            continue
        event = RiskEvent(event_id=f"order:{r.order_id}", kind="order", ts_ms=r.ts_ms, amount=10.0, items=items)
        fraud = bool(r.label_fraud)
        if r.ts_ms < today:
            old = sources["today_unguarded"](r.user_pseudonym, event)
            new = sources["as_of"](r.user_pseudonym, event)
            if old is not None and new is not None:
                rows["replay, today's model (before)"].append((old, fraud, r.fraud_pattern))
                rows["replay, as-of model (now)"].append((new, fraud, r.fraud_pattern))
        elif r.ts_ms > trained_today["data_window_ms"][1]:
            live = sources["today"](r.user_pseudonym, event)
            if live is not None:
                rows["live"].append((live, fraud, r.fraud_pattern))

    report = {"users": args.users, "days": args.days, "seed": args.seed,
              "today_model": trained_today, "as_of_model": trained_as_of, "sources": {}}
    print(f"{'source':34} {'orders':>7} {'fraud':>6} {'median legit':>13} {'median fraud':>13} {'fraud AUC':>10}")
    for name, values in rows.items():
        x = np.array([v for v, _, _ in values])
        y = np.array([f for _, f, _ in values], dtype=bool)
        row = {"orders": int(len(x)), "fraud": int(y.sum()),
               "median_legit": float(np.median(x[~y])) if (~y).any() else None,
               "median_fraud": float(np.median(x[y])) if y.any() else None, "fraud_auc": auc(x, y),
               "by_pattern_auc": {p: auc(x[(np.array([q for _, _, q in values]) == p) | ~y],
                                         y[(np.array([q for _, _, q in values]) == p) | ~y])
                                  for p in sorted({q for _, f, q in values if f and q})}}
        report["sources"][name] = row
        print(f"{name:34} {row['orders']:7d} {row['fraud']:6d} {row['median_legit'] or float('nan'):13.4f} "
              f"{row['median_fraud'] or float('nan'):13.4f} {row['fraud_auc']:10.3f}")
        print(f"{'':34} by pattern: " + ", ".join(f"{p} {a:.3f}" for p, a in row["by_pattern_auc"].items()))
    report["seconds"] = round(time.time() - started, 1)
    shop.close()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
