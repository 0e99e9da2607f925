"""How the item-pair release's threshold trades genuine pairs against pairs that are only noise,
measured on validation targets (the test targets are not read).

    .venv/bin/python bench/dp_pairs_threshold.py --dataset beauty --epsilons 1,8 \
        --thresholds 4,4.5,5,5.5 --draws 3 [--share 0.75] [--max-len 51]
    .venv/bin/python bench/dp_pairs_threshold.py --dataset beauty --exact 2.84,2,1,0.5,0

For each epsilon, the release gets `share` of it alone (as `PrivateBehaviourRecommender` gives it by
default, delta = 1 / users) and is drawn `--draws` times per threshold (in standard deviations of its
noise). Each draw is scored on the leave-one-out split's validation targets as the DP model scores it:
the "log" blend of a first model with the released pairs. The first model here is popularity (log of
the training counts), a stand-in for the DP network, which on Beauty at these epsilons ranks about as
popularity does (docs/benchmarks.md); so the figures compare thresholds, they are not the DP model's.
Reported per threshold: median validation HR@10 and NDCG@10 over the draws, pairs released, and how
many of them are expected from noise alone (untouched cells times the tail probability).

`--exact W1,W2,...` asks what the threshold, rather than the noise, costs: it scores the exact table (every
user's clipped contribution summed, no noise) keeping the pairs whose weight exceeds each W, and prints
the epsilon a release alone would need to put its 4-standard-deviation threshold at W (delta 1 / users).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets import load  # noqa: E402  (bench/datasets.py)

from shopmind.evaluation import evaluate_ranking, leave_one_out  # noqa: E402
from shopmind.models.baselines import ItemKNNRecommender, PopularityRecommender  # noqa: E402
from shopmind.privacy.dp_cooccurrence import private_cooccurrence, release_noise_multiplier, true_table  # noqa: E402
from shopmind.privacy.dp_training import COOCCURRENCE_BLEND  # noqa: E402
from shopmind.recommend.blend import blend  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--epsilons", default="1,8")
    ap.add_argument("--thresholds", default="4,4.5,5,5.5")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--share", type=float, default=0.75)
    ap.add_argument("--max-len", type=int, default=51, help="events per user the release reads (DP max_len + 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", default="", help="clipped weights W: score the exact table's pairs above each")
    args = ap.parse_args()

    data = load(args.dataset, context=False)
    split = leave_one_out(data)
    users = len(data.user_ids)
    delta = 1.0 / users
    popularity = PopularityRecommender().fit(data, split)
    log_counts = np.log1p(popularity.counts_)
    train = [np.asarray(s) for s in split.train]
    cells = data.n_items * (data.n_items - 1) // 2
    rng = np.random.default_rng(args.seed)
    kind, weight = COOCCURRENCE_BLEND
    rows = []
    print(f"{args.dataset}: {users:,} users, {data.n_items:,} items, {cells:,} cells")
    if args.exact:
        exact_ceiling(args, data, split, train, log_counts, delta)
        return
    print("| epsilon | release epsilon | noise multiplier | threshold (sd) | valid HR@10 | valid NDCG@10 | "
          "pairs released | expected from noise alone |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for eps in (float(e) for e in args.epsilons.split(",")):
        sigma = release_noise_multiplier(eps * args.share, delta)
        for tau in (float(t) for t in args.thresholds.split(",")):
            hrs, ndcgs, released = [], [], []
            for _ in range(args.draws):
                table, facts = private_cooccurrence(train, data.n_items, sigma, rng, threshold=tau,
                                                    max_len=args.max_len)
                knn = ItemKNNRecommender()
                knn.similarity_, knn.item_ids_ = table, list(data.item_ids)

                def score(histories, knn=knn):
                    first = np.broadcast_to(log_counts, (len(histories), len(log_counts)))
                    return blend(kind, weight, first, knn.score(histories))

                report = evaluate_ranking(score, split, "valid")[0]
                hrs.append(report.hr)
                ndcgs.append(report.ndcg)
                released.append(facts["released_pairs"])
            row = {"epsilon": eps, "release_epsilon": eps * args.share, "noise_multiplier": sigma,
                   "threshold_sd": tau, "valid_hr@10": statistics.median(hrs), "valid_ndcg@10": statistics.median(ndcgs),
                   "draws_hr@10": hrs, "pairs_released": statistics.median(released),
                   "expected_noise_pairs": cells * float(ndtr(-tau))}
            rows.append(row)
            print(f"| {eps:g} | {eps * args.share:g} | {sigma:.2f} | {tau:g} | {row['valid_hr@10']:.4f} | "
                  f"{row['valid_ndcg@10']:.4f} | {row['pairs_released']:,.0f} | {row['expected_noise_pairs']:,.0f} |",
                  flush=True)
    out = ROOT / "bench" / "out" / f"dp_pairs_threshold_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=2))


def exact_ceiling(args, data, split, train, log_counts, delta) -> None:
    """The exact table's pairs above each clipped weight, scored as a release would be."""
    kind, weight = COOCCURRENCE_BLEND
    table = true_table(train, data.n_items, 2, args.max_len)
    rows = []
    print("| pairs kept: exact weight above | pairs | valid HR@10 | valid NDCG@10 | release epsilon for a 4-sd threshold there |")
    print("|---:|---:|---:|---:|---:|")
    for cut in (float(w) for w in args.exact.split(",")):
        keep = table.data > cut
        upper = sp.coo_matrix((table.data[keep].astype(np.float32), (table.row[keep], table.col[keep])),
                              shape=table.shape)
        knn = ItemKNNRecommender()
        knn.similarity_, knn.item_ids_ = (upper + upper.T).tocsr(), list(data.item_ids)

        def score(histories, knn=knn):
            first = np.broadcast_to(log_counts, (len(histories), len(log_counts)))
            return blend(kind, weight, first, knn.score(histories))

        report = evaluate_ranking(score, split, "valid")[0]
        eps = release_epsilon(cut / 4, delta) if cut > 0 else float("inf")
        rows.append({"exact_weight_above": cut, "pairs": int(keep.sum()), "valid_hr@10": report.hr,
                     "valid_ndcg@10": report.ndcg, "release_epsilon_for_4sd": eps})
        print(f"| {cut:g} | {int(keep.sum()):,} | {report.hr:.4f} | {report.ndcg:.4f} | {eps:.1f} |", flush=True)
    out = ROOT / "bench" / "out" / f"dp_pairs_exact_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=2))


def release_epsilon(sigma: float, delta: float) -> float:
    """The epsilon of one Gaussian release of noise multiplier `sigma` (sensitivity 1), PRV accountant."""
    from opacus.accountants.utils import create_accountant

    accountant = create_accountant(mechanism="prv")
    accountant.history = [(sigma, 1.0, 1)]
    return float(accountant.get_epsilon(delta=delta))


if __name__ == "__main__":
    main()
