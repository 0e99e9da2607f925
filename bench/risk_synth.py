"""Fraud caught per pattern on the generated shop, at 1% of orders sent to review.

    .venv/bin/python bench/risk_synth.py [--users 5000] [--days 60] [--seed 7] [--train-days 40] [--delay 7]

Generates a shop (account takeover, card testing, promotion abuse and reshipping are planted by
shopmind.synth.fraud), imports it, replays every order and payment through the engine in time order
(point-in-time velocity features into the decision log, no model yet), trains the risk model with the
cut-off at the end of day --train-days and a --delay-day label delay (fraud labels become known
--delay days after the event; unlabelled events younger than that are left out), and scores the
orders and payments after the cut-off from their logged features. The top 1% of each (by score) go to
review; the recall of each pattern among them is reported, and the same at 2% and 5%.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopmind.config import load_settings  # noqa: E402
from shopmind.risk.features import FEATURE_NAMES  # noqa: E402
from shopmind.risk.training import DAY_MS, replay_history, train_risk_model  # noqa: E402
from shopmind.shop import Shop  # noqa: E402
from shopmind.storage import schema  # noqa: E402
from shopmind.synth import generate_shop, write_shop  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train-days", type=int, default=40)
    ap.add_argument("--delay", type=float, default=7.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        shop, _ = Shop.init(load_settings(home=home, cache_url="memory://"))
        paths = write_shop(generate_shop(n_users=args.users, days=args.days, seed=args.seed), home / "data", "parquet")
        for kind in ("items", "users", "events", "orders", "payments"):
            shop.import_file(paths[kind], kind, actor="bench")
        t = time.perf_counter()
        replayed = replay_history(shop, label_delay_days=args.delay)
        replay_s = time.perf_counter() - t
        with shop.store.transaction() as conn:
            first = conn.execute(schema.orders.select().order_by(schema.orders.c.ts_ms).limit(1)).first().ts_ms
        cutoff = first + args.train_days * DAY_MS
        t = time.perf_counter()
        trained = train_risk_model(shop, "bench", cutoff_ms=cutoff, label_delay_days=args.delay)
        train_s = time.perf_counter() - t
        model = shop.risk.engine().model
        result = {"config": vars(args), "replayed": replayed, "replay_seconds": round(replay_s, 1),
                  "train": trained, "train_seconds": round(train_s, 1), "recall": {}}
        for kind, table, key in (("order", "orders", "order_id"), ("payment", "payments", "payment_id")):
            decisions = shop.store.frame(schema.risk_decisions.select().where(
                schema.risk_decisions.c.kind == kind, schema.risk_decisions.c.ts_ms > cutoff))
            truth = pl.read_parquet(paths[table]).select(
                pl.concat_str([pl.lit(f"{kind}:"), pl.col(key)]).alias("event_id"), "label_fraud", "fraud_pattern")
            test = decisions.join(truth, on="event_id", how="left")
            X = np.array([[np.nan if (v := json.loads(f).get(n)) is None else v for n in FEATURE_NAMES]
                          for f in test["features"]], dtype=np.float64)
            scores = model.predict_proba(X)
            ranked = np.argsort(-scores)
            patterns = test["fraud_pattern"].fill_null("legitimate").to_numpy()
            for share in (0.01, 0.02, 0.05):
                top = np.zeros(len(test), dtype=bool)
                top[ranked[:max(1, int(round(share * len(test))))]] = True
                per: dict[str, dict] = {}
                for pattern in sorted(set(patterns) - {"legitimate"}):
                    mask = patterns == pattern
                    per[pattern] = {"n": int(mask.sum()), "recall": round(float(top[mask].mean()), 3)}
                fraud = patterns != "legitimate"
                per["all fraud"] = {"n": int(fraud.sum()), "recall": round(float(top[fraud].mean()), 3),
                                    "precision": round(float(fraud[top].mean()), 3),
                                    # the best any ranking can do when fraud outnumbers the review slots
                                    "recall_ceiling": round(min(1.0, top.sum() / max(1, fraud.sum())), 3)}
                result["recall"][f"{kind}s, {share:.0%} reviewed (of {len(test)})"] = per
        print(json.dumps(result, indent=2))
        shop.close()


if __name__ == "__main__":
    main()
