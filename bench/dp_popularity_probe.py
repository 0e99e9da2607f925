"""Would a differentially private popularity expert help the DP behaviour model? Validation targets only.

    .venv/bin/python bench/dp_popularity_probe.py --dataset beauty --epsilon 8 [--popularity-share 0.05]

Trains `PrivateBehaviourRecommender` (its defaults: DP-SGD composed with the item-pair release) at
(1 - share) x epsilon, releases item popularity with the Gaussian mechanism at share x epsilon (each
user's distinct latest 51 items, weight 1 / sqrt(their number), so the user's contribution has L2 norm
1; noise on every item), and scores the leave-one-out split's validation targets (HR@10, NDCG@10) for:
the model as it is; the model times the popularity expert (its log share added to the scores with
weight 0.5 and 1, a product of experts like the pairs' blend); popularity alone; popularity blended
with the model's released pairs, without the network; the network alone. The split of epsilon is
added up loosely (the two budgets are summed, not composed by the accountant): a probe, not a model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets import load  # noqa: E402  (bench/datasets.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--popularity-share", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from shopmind.evaluation import evaluate_ranking, leave_one_out
    from shopmind.privacy.dp_cooccurrence import release_noise_multiplier
    from shopmind.privacy.dp_training import PrivateBehaviourRecommender, secret_seed
    from shopmind.recommend.behaviour import auto_config

    torch.set_num_threads(2)
    data = load(args.dataset, context=False)
    if args.dataset == "shop":  # known users only, as DP training reads them
        data = data.subset(np.array([n for n, u in enumerate(data.user_ids) if not u.startswith("s:")]))
    split = leave_one_out(data)
    delta = 1.0 / len(split.train)
    sigma = release_noise_multiplier(args.epsilon * args.popularity_share, delta)
    counts = np.zeros(data.n_items)
    for seq in split.train:
        items = np.unique(np.asarray(seq)[-51:])
        if len(items):
            counts[items] += 1.0 / np.sqrt(len(items))
    noisy = np.maximum(counts + np.random.default_rng(secret_seed()).standard_normal(data.n_items) * sigma, 0.0)
    log_share = np.log(noisy / max(noisy.sum(), 1e-12) + 1e-6)
    size = auto_config(data.n_items, data.n_interactions, float(np.mean([len(s) for s in data.sequences])))
    started = time.perf_counter()
    model = PrivateBehaviourRecommender(epsilon=args.epsilon * (1 - args.popularity_share), epochs=args.epochs,
                                        d_model=size["d_model"], dropout=size["dropout"]).fit(data, split=split)
    row = {"dataset": args.dataset, "epsilon": args.epsilon, "popularity_share": args.popularity_share,
           "popularity_noise": round(sigma, 2), "fit_s": round(time.perf_counter() - started)}

    def valid(score) -> list[float]:
        report = evaluate_ranking(score, split, "valid")[0]
        return [round(report.hr, 4), round(report.ndcg, 4)]

    def popularity(histories):
        return np.broadcast_to(log_share, (len(histories), len(log_share))).copy()

    row["model as it is"] = valid(model.score)
    for weight in (0.5, 1.0):
        row[f"model x popularity, weight {weight}"] = valid(lambda h, w=weight: model.score(h) + w * log_share[None, :])
    row["popularity alone"] = valid(popularity)
    row["popularity + pairs, no network"] = valid(lambda h: model.blend_.apply(popularity(h), h))
    row["network alone"] = valid(lambda h: model.score(h, blended=False))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
