"""What reading event context costs one transformer pass: the trunk state after a 51-event history
(one first visit), 100,000-item model of width 128, one torch thread as `shopmind serve` runs, with
and without the context inputs (type, gap, hour, weekday). Median of 1,000 calls, three rounds.

    .venv/bin/python bench/context_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shopmind.models.behaviour import GAP_BUCKETS, BehaviourConfig, BehaviourModel  # noqa: E402
from shopmind.recommend.behaviour import BehaviourRecommender  # noqa: E402


def median_ms(calendar: bool, rng: np.random.Generator) -> float:
    est = BehaviourRecommender()
    est.config_ = BehaviourConfig(n_items=100_000, d_model=128, calendar=calendar,
                                  n_time_buckets=GAP_BUCKETS if calendar else 0)
    est.model_ = BehaviourModel(est.config_).eval()
    est.item_ids_ = [str(i) for i in range(100_000)]
    history = rng.integers(0, 100_000, 51)
    context = np.stack([rng.integers(1, 5, 51), 1_700_000_000 + np.cumsum(rng.integers(1, 3600, 51))], axis=1)
    for _ in range(100):
        est.user_state([history], [context])
    times = []
    for _ in range(1000):
        started = time.perf_counter()
        est.user_state([history], [context])
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rounds = {False: [], True: []}
    for _ in range(3):
        for calendar in (False, True):
            rounds[calendar].append(median_ms(calendar, rng))
    for calendar, values in rounds.items():
        label = "with context" if calendar else "item ids only"
        print(f"{label}: median ms per pass {', '.join(f'{v:.3f}' for v in values)}"
              f" (median of rounds {np.median(values):.3f})")


if __name__ == "__main__":
    main()
