"""Fraud-detection quality on the Fraud-Detection-Handbook simulated transactions, handbook protocol.

    .venv/bin/python bench/risk_quality.py [--data ../shared/data/fraud] [--seeds 0,1,2]

Reads the 51 daily pickles (fdh_simulated_raw/ 2018-06-25..07-24 as feature history, then
fdh_simulated_transformed/ 2018-07-25..08-14), keeps only the raw columns (TRANSACTION_ID, TX_DATETIME,
CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD; the pre-computed feature columns and TX_FRAUD_SCENARIO are
dropped) and runs shopmind.risk.handbook with the handbook split: train 2018-07-25..31, 7 days of label
delay, test 2018-08-08..14, cards known to be compromised removed from the test set. Two rows per seed:
LightGBM on shopmind's point-in-time features, and the same LightGBM on the handbook's 15 baseline
features (recomputed from the raw columns by shopmind) as a reference. Medians over the seeds are
compared with the handbook's published figures.

It also reports a ceiling: the metrics of an oracle that ranks first every fraud that was knowable under
the 7-day label delay, i.e. every fraud except those at a compromised terminal (scenario 2) with no fraud
label old enough to be known yet. That analysis is the only use of TX_FRAUD_SCENARIO, and it never feeds
a model. Writes bench/out/risk_quality.json and prints Markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from shopmind.risk.handbook import (RAW_COLUMNS, average_precision, card_precision_at_k,  # noqa: E402
                                    load_transactions, run_evaluation)
from shopmind.risk.handbook_features import compute_features  # noqa: E402

# The figures issue #5 quotes as the handbook's best (tuned XGBoost on its 15 features; the issue gives
# the AUC as a neural network's). They are not from this split: the handbook's model-selection chapter reports each
# test figure as a mean over four prequential test weeks (2018-08-08 to 09-04), of which this test week
# is the first; the staged data ends on 08-14, so the other three cannot be scored here.
PUBLISHED = {"average_precision": 0.687, "card_precision@100": 0.303, "auc": 0.876}
TARGET = {"average_precision": 0.72, "card_precision@100": 0.31}
# MANIFEST.md of the staged data (train) and the handbook's filtered test set.
EXPECTED = {"transactions": 488_678, "train": 67_240, "train_frauds": 598, "test": 58_264, "test_frauds": 385}


def load(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    files = [f for folder in ("fdh_simulated_raw", "fdh_simulated_transformed")
             for f in sorted((data / folder).glob("*.pkl"))]
    if len(files) != 51:
        raise SystemExit(f"expected 51 daily pickles under {data}, found {len(files)}")
    frames = [pd.read_pickle(f) for f in files]
    raw = pd.concat([f[list(RAW_COLUMNS)] for f in frames], ignore_index=True)
    scenario = pd.concat([f[["TRANSACTION_ID", "TX_FRAUD_SCENARIO"]] for f in frames], ignore_index=True)
    return raw, scenario


def ceiling(raw: pl.DataFrame, scenario: pd.DataFrame, report: dict) -> dict:
    """Metrics of the oracle that ranks every knowable fraud of the test set first."""
    df = load_transactions(raw)
    known = compute_features(df, "shopmind")["terminal_known_frauds_30d"].to_numpy()
    frame = df.with_columns(pl.Series("term_known", known)).join(
        pl.from_pandas(scenario), on="TRANSACTION_ID", how="left")
    ids = pl.Series(report["test_ids"])
    test = frame.filter(pl.col("TRANSACTION_ID").is_in(ids.implode())).sort("TX_DATETIME")
    y = test["TX_FRAUD"].to_numpy().astype(np.int64)
    knowable = (y == 1) & ~((test["TX_FRAUD_SCENARIO"].to_numpy() == 2) & (test["term_known"].to_numpy() == 0))
    oracle = knowable.astype(np.float64)
    # For card precision, a card whose frauds of the day nobody could know ranks below every genuine
    # card: scored 0 like them, a few such cards filled a day's top 100 through the tie order (card id),
    # which is luck, not knowledge (0.307 with it; without, the cards with a knowable fraud alone).
    days, cards = test["TX_DATETIME"].dt.date(), test["CUSTOMER_ID"]
    unknown_fraud_day = (pl.DataFrame({"day": days, "card": cards, "y": y, "k": knowable})
                         .with_columns(((pl.col("y").max() == 1) & ~pl.col("k").max()).over(["day", "card"]).alias("u"))
                         ["u"].to_numpy())
    no_luck = np.where(knowable, 1.0, np.where(unknown_fraud_day, -1.0, 0.0))
    return {"average_precision": average_precision(y, oracle),
            "card_precision@100": card_precision_at_k(days, cards, y, no_luck, 100)[0],
            "card_precision@100_ties_by_card_id": card_precision_at_k(days, cards, y, oracle, 100)[0],
            "knowable_frauds": int(knowable.sum()), "frauds": int(y.sum()),
            "cards_with_a_knowable_fraud": int(test.filter(pl.Series(knowable))["CUSTOMER_ID"].n_unique())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fraud")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    started = time.perf_counter()
    raw_pd, scenario = load(args.data)
    raw = pl.from_pandas(raw_pd)
    load_s = time.perf_counter() - started
    runs: dict[str, list[dict]] = {"shopmind": [], "handbook": []}
    test_ids = None
    for feature_set in ("shopmind", "handbook"):
        for seed in seeds:
            result = run_evaluation(raw, seed=seed, feature_set=feature_set)
            report = result.report
            runs[feature_set].append(report)
            if test_ids is None:
                test_ids = result.scores.filter("in_test_set")["TRANSACTION_ID"].to_list()
            m = report["metrics"]
            print(f"{feature_set:9s} seed {seed}: AP {m['average_precision']:.4f}  CP@100 {m['card_precision@100']:.4f}"
                  f"  AUC {m['auc']:.4f}  features {report['wall_s']['features']:.1f}s  train "
                  f"{report['wall_s']['train']:.1f}s", flush=True)
    counts = runs["shopmind"][0]["counts"]
    mismatched = {k: (counts[k], v) for k, v in EXPECTED.items() if counts[k] != v}

    summary = {}
    for feature_set, reports in runs.items():
        row = {"n_features": len(reports[0]["feature_names"]), "feature_names": reports[0]["feature_names"]}
        for key in ("average_precision", "card_precision@100", "auc"):
            values = [r["metrics"][key] for r in reports]
            row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}
        for key in ("features", "train", "predict", "total"):
            row[f"{key}_s"] = statistics.median(r["wall_s"][key] for r in reports)
        summary[feature_set] = row
    bound = ceiling(raw, scenario, {"test_ids": test_ids})

    result = {
        "dataset": "Fraud-Detection-Handbook simulated, 2018-06-25..08-14 (history from 06-25)",
        "split": runs["shopmind"][0]["windows"], "counts": counts, "counts_mismatch_vs_handbook": mismatched,
        "seeds": seeds, "params": runs["shopmind"][0]["params"], "load_s": round(load_s, 1),
        "summary": summary, "published": PUBLISHED, "target": TARGET, "ceiling_knowable": bound,
        "target_reached": {k: summary["shopmind"][k]["median"] >= v for k, v in TARGET.items()},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "runs": runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "risk_quality.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k not in {"runs"}}, indent=2, default=str))

    print("\n| data set | model | features | AP | card precision@100 | AUC | train s | features s |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"shopmind": "shopmind point-in-time", "handbook": "handbook 15 (recomputed)"}
    for feature_set, row in summary.items():
        cells = [f"{row[k]['median']:.3f} ({row[k]['min']:.3f}-{row[k]['max']:.3f})"
                 for k in ("average_precision", "card_precision@100", "auc")]
        print(f"| FDH simulated | LightGBM | {names[feature_set]} ({row['n_features']}) | " + " | ".join(cells)
              + f" | {row['train_s']:.1f} | {row['features_s']:.1f} |")
    print(f"| FDH simulated | XGBoost, tuned (published; mean of 4 test weeks, not this split) | handbook 15 | {PUBLISHED['average_precision']:.3f} | "
          f"{PUBLISHED['card_precision@100']:.3f} | {PUBLISHED['auc']:.3f} | | |")
    print(f"| FDH simulated | oracle on knowable frauds (ceiling) | | {bound['average_precision']:.3f} | "
          f"{bound['card_precision@100']:.3f} | | | |")
    ours = summary["shopmind"]
    for key, goal in TARGET.items():
        status = "reached" if ours[key]["median"] >= goal else "NOT reached"
        print(f"target {key} >= {goal}: {status} (median {ours[key]['median']:.4f}; published "
              f"{PUBLISHED[key]:.3f}; ceiling {bound[key]:.4f})")
    if mismatched:
        print(f"warning: counts differ from the handbook's: {mismatched}")


if __name__ == "__main__":
    main()
