"""Cost of ranking a batch of user states against the whole catalog: float32 against bfloat16.

    .venv/bin/python bench/scan_cost.py [--items 100000] [--dim 256] [--batches 1,2,4,8,16,32] [--repeats 20]

What `ItemIndex.top_k_many` does for the first visits that recommend/batching.py ranks together (best
100 + 30 hidden items per user), on one torch/BLAS thread as `shopmind serve` runs: the exact float32
scan (`coarse_min_items` above the catalog size) against the bfloat16 scan with its exact float32
rerank and proof (the default from 20,000 items). Item vectors have cluster structure (500 topics),
queries are sums of two item vectors. Before each timed call 160 MB of other memory is read, so the
item matrix comes from RAM as it does between a server's batches, not from a warm cache. Prints the
median ms per user of each scan, their ratio, whether the answers are identical, and how many users
the bfloat16 bound could not prove (those were rescanned in float32; they are in the timings), and
what the index's build-time race (`ItemIndex._bf16_is_faster`) would choose on this processor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from shopmind.recommend.index import ItemIndex  # noqa: E402


def clustered_items(n_items: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors (n_items, dim) around 500 topic centres, and biases: an item matrix with the cluster
    structure a trained model's has (also bench/unusualness_cost.py's)."""
    centres = rng.standard_normal((500, dim)).astype(np.float32)
    vectors = (centres[rng.integers(0, 500, n_items)]
               + rng.standard_normal((n_items, dim)).astype(np.float32)) * np.float32(0.03)
    return vectors, (0.1 * rng.standard_normal(n_items)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    vectors, bias = clustered_items(args.items, args.dim, rng)
    exact = ItemIndex(vectors, bias, ann_min_items=args.items + 1, coarse_min_items=args.items + 1)
    # Forced on, so both scans are timed on any processor; what serving would choose here is the race's.
    coarse = ItemIndex(vectors, bias, ann_min_items=args.items + 1, check_speed=False)
    assert coarse.coarse is not None, "the bfloat16 scan was refused: its error exceeded the bound (see the log)"
    race = ItemIndex(vectors, bias, ann_min_items=args.items + 1)
    other_memory = np.ones(40_000_000, dtype=np.float32)

    def timed(index: ItemIndex, states, ks, hiddens) -> float:
        times = []
        for _ in range(args.repeats + 1):
            other_memory.sum()
            started = time.perf_counter()
            index.top_k_many(states, ks, hiddens)
            times.append(time.perf_counter() - started)
        return float(np.median(times[1:]))

    from recommend_latency import processor  # bench/ is on sys.path when run as a script

    print(processor())
    print(f"{args.items} items x {args.dim + 1} floats, one thread, median of {args.repeats}; "
          f"build-time race: float32 / bfloat16 time {race.coarse_speedup_:.2f}, serving would use "
          f"{'bfloat16' if race.coarse is not None else 'float32 only'}")
    print("| users per batch | float32 ms/user | bfloat16 ms/user | ratio | same answers | unproven |")
    print("|---:|---:|---:|---:|---|---:|")
    for batch in [int(b) for b in args.batches.split(",")]:
        states = vectors[rng.integers(0, args.items, batch)] + vectors[rng.integers(0, args.items, batch)]
        hiddens = [rng.integers(0, args.items, 30).tolist() for _ in range(batch)]
        ks = [100] * batch
        same = ([[i for i, _ in top] for top in exact.top_k_many(states, ks, hiddens)]
                == [[i for i, _ in top] for top in coarse.top_k_many(states, ks, hiddens)])
        before = coarse.unproven
        f32, bf16 = timed(exact, states, ks, hiddens), timed(coarse, states, ks, hiddens)
        unproven = (coarse.unproven - before) / (args.repeats + 1)
        print(f"| {batch} | {f32 / batch * 1000:.2f} | {bf16 / batch * 1000:.2f} | {f32 / bf16:.2f} | {same} "
              f"| {unproven:.0f} of {batch} |")


if __name__ == "__main__":
    main()
