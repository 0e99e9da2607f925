"""The full stochastic differential-privacy test (after Google's DP stochastic tester): for several query
types, release on neighbouring data sets D and D' (one heavy user removed) many times through the whole
path (`release`: bounding, noisy threshold, noise), and check every outcome's probability stays within
P(D) <= e^epsilon P(D') + delta and the reverse, beyond a Clopper-Pearson bound. The CI version is
tests/privacy/test_dp_analytics.py (count only, measurements called directly, 2,000 runs).

    .venv/bin/python bench/dp_stochastic.py [--runs 5000] [--epsilon 1.0]

Prints a Markdown table: query, runs per data set, outcomes, the largest observed ratio among outcomes
with at least 1% of the mass, and the number of outcomes that break the bound (0 expected).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from shopmind.privacy.analytics import ReportQuery, release  # noqa: E402
from tests.privacy.test_dp_analytics import dp_violations, frame  # noqa: E402

QUERIES = {
    "count": dict(metric="count", max_groups=2, max_rows_per_group=2),
    "sum (price in [0, 20])": dict(metric="sum", value="price", bounds=(0.0, 20.0), max_groups=2),
    "mean (price in [0, 20])": dict(metric="mean", value="price", bounds=(0.0, 20.0), max_groups=1),
    "histogram (2 bins)": dict(metric="histogram", value="price", bounds=(0.0, 20.0), bins=2, max_groups=2),
    "count, gaussian": dict(metric="count", max_groups=2, noise="gaussian"),
}
BIN_WIDTH = {"count": 1, "sum": 20.0, "mean": 0.25, "histogram": 1}


def outcome(report, metric: str):
    """The released value of group "a" (first bin for histograms), binned; None when not released."""
    rows = [r for r in report.rows if r["group"] == "a"]
    if not rows:
        return None
    return math.floor(rows[0]["value"] / BIN_WIDTH[metric])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--epsilon", type=float, default=1.0)
    args = parser.parse_args()
    # "a" sits near the threshold so that its release itself is random; the heavy user is in "a" and "b".
    d = frame({"a": 105, "b": 300}, heavy=1000, heavy_groups=2).with_columns(
        group=pl.col("group").replace({"g0": "a", "g1": "b"}))
    d2 = d.filter(pl.col("user_pseudonym") != "heavy")
    print("| query | runs | outcomes | max ratio (mass >= 1%) | e^eps | violations | s |\n|---|---|---|---|---|---|---|")
    for name, spec in QUERIES.items():
        query = ReportQuery(epsilon=args.epsilon, **spec)
        start = time.perf_counter()
        a, b = ([outcome(release(x, query), spec["metric"]) for _ in range(args.runs)] for x in (d, d2))
        report = release(d, query)
        bad = dp_violations(a, b, args.epsilon, report.delta)
        ca, cb = Counter(a), Counter(b)
        heavy = [o for o in set(ca) | set(cb) if min(ca[o], cb[o]) >= 0.01 * args.runs]
        ratio = max((max(ca[o] / cb[o], cb[o] / ca[o]) for o in heavy), default=float("nan"))
        print(f"| {name} | {args.runs} | {len(set(a) | set(b))} | {ratio:.3f} | {math.exp(args.epsilon):.3f} "
              f"| {len(bad)} | {time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
