"""Cost and error of the risk engine's behaviour-model feature on a large catalog: exact against sampled.

    .venv/bin/python bench/unusualness_cost.py [--items 100000] [--dim 256] [--queries 1000]

The feature (`RecommendationService.unusualness`) is, for each ordered item, the share of the catalog
that the behaviour model scores above it for this user. Exact, that is a scan of the whole catalog per
decision; `ItemIndex.rank_fraction` compares against a fixed sample of RANK_SAMPLE items instead once
the catalog is larger. This times both on one thread (160 MB of other memory read before each call, so
the item matrix comes from RAM as between a server's decisions), over the same item matrix recipe as
bench/scan_cost.py (500 topics, queries are sums of two item vectors), and reports how far the estimate
is from the exact share: median, p99 and largest absolute error over --queries (state, item) pairs, a
quarter of the items drawn from each query's best 1%, where an order a user would place lies.
"""

from __future__ import annotations

import argparse
import time

# bench/ is on sys.path when run as a script; importing scan_cost first sets OMP_NUM_THREADS=1 and puts
# the repository root on sys.path, before NumPy and torch load
from scan_cost import clustered_items  # isort: skip

import numpy as np  # noqa: E402
import torch  # noqa: E402

from shopmind.recommend.index import RANK_SAMPLE, ItemIndex  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    vectors, bias = clustered_items(args.items, args.dim, rng)
    index = ItemIndex(vectors, bias, ann_min_items=args.items + 1, coarse_min_items=args.items + 1)
    other_memory = np.ones(40_000_000, dtype=np.float32)
    states = vectors[rng.integers(0, args.items, args.queries)] + vectors[rng.integers(0, args.items, args.queries)]

    def exact_share(state: np.ndarray, item: int) -> float:  # what the feature computed before
        scores = index.scores(state)
        return float((scores > scores[item]).mean())

    exact_ms, sampled_ms, errors = [], [], []
    for n, state in enumerate(states):
        if n % 4 == 0:  # an item among this user's best 1%
            scores = index.scores(state)
            item = int(rng.choice(np.argsort(-scores)[: args.items // 100]))
        else:
            item = int(rng.integers(0, args.items))
        other_memory.sum()
        started = time.perf_counter()
        exact = exact_share(state, item)
        exact_ms.append((time.perf_counter() - started) * 1000)
        other_memory.sum()
        started = time.perf_counter()
        estimate = index.rank_fraction(state, [item])
        sampled_ms.append((time.perf_counter() - started) * 1000)
        errors.append(abs(estimate - exact))
    errors = np.array(errors)
    print(f"{args.items} items x {args.dim + 1} floats, {args.queries} queries, one thread; sample {RANK_SAMPLE}")
    print("| share of the catalog above an item | median ms | p99 ms |")
    print("|---|---:|---:|")
    for name, ms in (("exact (full scan)", exact_ms), (f"sampled ({RANK_SAMPLE} items)", sampled_ms)):
        print(f"| {name} | {np.median(ms):.3f} | {np.percentile(ms, 99):.3f} |")
    print(f"absolute error of the estimate: median {np.median(errors):.4f}, p99 {np.percentile(errors, 99):.4f}, "
          f"max {errors.max():.4f} (bound on one standard error: {0.5 / np.sqrt(RANK_SAMPLE):.4f})")


if __name__ == "__main__":
    main()
