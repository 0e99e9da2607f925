"""What a shop's served model gains from training on everyone's newest events but a holdout's.

    .venv/bin/python bench/holdout_training.py [--dataset beauty] [--holdout 5000] [--budget 540]
        [--threads 2] [--seed 0] [--out holdout_beauty.json]

`shopmind train` keeps a holdout of users (a hash of their id picks them, training/pipeline.py) out of
training for their two newest events and trains on every other user's whole sequence. The benchmark
tables never do that: there every user's test item is held out. This script measures the difference
on one public data set, judged as the promotion gate judges, on the holdout users' newest events:

- `selection`: the benchmark default, the holdout's validation items choose the epoch and the blend,
  every other user's validation item trains, no test item trains (`Split.with_selection`);
- `holdout`: the shop's setting, every other user's whole sequence trains, newest event included
  (`Split.with_holdout`).

Same seed, same holdout, one after the other, each trained within `--budget` seconds and blended with
item kNN as `shopmind train` does; the network alone is scored too. Writes bench/out/<out>.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from datasets import load  # noqa: E402  bench/datasets.py

from shopmind.evaluation import evaluate_ranking, leave_one_out  # noqa: E402
from shopmind.recommend.behaviour import BehaviourRecommender  # noqa: E402
from shopmind.recommend.blend import attach_blend  # noqa: E402
from shopmind.training.pipeline import holdout_users  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--holdout", type=int, default=5000)
    parser.add_argument("--budget", type=float, default=540)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="holdout_beauty.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.dataset)
    split = leave_one_out(data)
    held = holdout_users(split, args.holdout)
    variants = {"selection": split.with_selection(held), "holdout": split.with_holdout(held)}
    rows = []
    for name, variant in variants.items():
        trained = sum(len(s) - 1 for s in variant.fit_sequences() if len(s) > 1)
        started = time.perf_counter()
        model = BehaviourRecommender(time_budget_s=args.budget, seed=args.seed).fit(data, variant)
        alone = evaluate_ranking(model.score, split, "test", users=held)[0]
        attach_blend(model, data, variant)
        seconds = time.perf_counter() - started
        served = evaluate_ranking(model.score, split, "test", users=held)[0]
        blend = model.blend_
        rows.append({"variant": name, "training_targets": trained, "holdout_users": int(len(held)),
                     "behaviour_alone": alone.as_dict(), "served": served.as_dict(),
                     "blend": None if blend is None else {"kind": blend.kind, "weight": blend.weight},
                     "epochs_run": len(model.history_), "best_epoch": model.best_epoch_,
                     "train_seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "bench" / "out" / args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"dataset": args.dataset, "seed": args.seed, "budget_s": args.budget, "rows": rows},
                              indent=2))
    print("\n| trained on | training targets | behaviour alone HR@10 / NDCG@10 | served HR@10 / NDCG@10 | train s | epochs (best) |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        a, s = r["behaviour_alone"], r["served"]
        print(f"| {r['variant']} | {r['training_targets']:,} | {a['hr@10']:.4f} / {a['ndcg@10']:.4f} | "
              f"{s['hr@10']:.4f} / {s['ndcg@10']:.4f} | {r['train_seconds']:.0f} | {r['epochs_run']} ({r['best_epoch']}) |")


if __name__ == "__main__":
    main()
