"""What serving a blend costs a first visit: the behaviour model's top k against the blend's top k.

    .venv/bin/python bench/blend_cost.py [--items 100000] [--dim 128] [--neighbours 100] [--calls 500]

A catalog of --items random item vectors (width --dim, plus a bias), an item kNN with --neighbours
random neighbours per item, and 50-item histories. Times, for the same user states, one thread:
  - `ItemIndex.top_k(state, 200, hidden=history)`: what a first visit does without a blend;
  - `ItemBlend.top_k(...)` under the "z" and the "log" rule: the same scan, the kNN's scores for the
    history (`ItemKNNRecommender.neighbour_scores`) and the blend over the catalog (recommend/blend.py).
Median and p99 in milliseconds over --calls calls, three rounds (the median round is printed).
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopmind.models.baselines import ItemKNNRecommender  # noqa: E402
from shopmind.recommend.blend import ItemBlend  # noqa: E402
from shopmind.recommend.index import ItemIndex  # noqa: E402

CANDIDATES = 200


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--neighbours", type=int, default=100)
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, d = args.items, args.dim
    vectors = rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    items = ItemIndex(vectors, rng.normal(size=n).astype(np.float32) * 0.1, ann_min_items=n + 1)  # exact scan
    rows = np.repeat(np.arange(n), args.neighbours)
    cols = rng.integers(0, n, size=n * args.neighbours)
    knn = ItemKNNRecommender()
    knn.similarity_ = sp.csr_matrix((rng.random(len(rows)).astype(np.float32), (rows, cols)), shape=(n, n))
    knn.item_ids_ = [f"i{i}" for i in range(n)]
    blends = {kind: ItemBlend(knn, kind, 0.2, {}) for kind in ("z", "log")}
    states = [rng.normal(size=d).astype(np.float32) for _ in range(args.calls)]
    histories = [rng.integers(0, n, size=50) for _ in range(args.calls)]
    for blend in blends.values():  # warm-up, untimed
        blend.top_k(items, states[0], histories[0], CANDIDATES, hidden=set(histories[0].tolist()))

    def timed(call) -> dict[str, float]:
        rounds = []
        for _ in range(3):
            lat = []
            for state, history in zip(states, histories):
                started = time.perf_counter()
                call(state, history)
                lat.append((time.perf_counter() - started) * 1000)
            lat.sort()
            rounds.append((statistics.median(lat), lat[int(0.99 * len(lat))]))
        median = sorted(rounds)[1]
        return {"p50_ms": round(median[0], 3), "p99_ms": round(median[1], 3)}

    report = {"items": n, "dim": d, "neighbours": args.neighbours, "candidates": CANDIDATES,
              "behaviour top_k": timed(lambda s, h: items.top_k(s, CANDIDATES, hidden=set(h.tolist())))}
    for kind, blend in blends.items():
        report[f"blend top_k ({kind})"] = timed(
            lambda s, h, b=blend: b.top_k(items, s, h, CANDIDATES, hidden=set(h.tolist())))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
