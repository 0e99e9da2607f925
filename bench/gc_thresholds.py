"""How CPython's cycle collector thresholds shape risk-decision latency in one serving process.

    .venv/bin/python bench/gc_thresholds.py --home /tmp/rk/home --decisions 40000 \
        --thresholds 10000,10,100 50000,20,100 700,10,10 [--no-freeze] [--service]

`--home` is a shop built by `bench/risk_latency.py --behaviour --home DIR` (20,000 users, a behaviour
model, a risk model and 50 rules). Each threshold runs in a fresh process, as `shopmind serve` runs:
one torch and BLAS thread, the opened shop frozen (`gc.freeze()`; `--no-freeze` leaves it), then `RiskEngine.decide` on
`--decisions` orders and payments (`--service`: `RiskService.decide`, which also commits each
decision and keeps its answer for retries) of random users, cards, devices and IPs (their velocity windows
grow as a shop's do). Prints one JSON line per threshold: latency percentiles (ms), per generation
[collections, longest pause ms, total ms], and how long one full collection takes at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import gc, json, random, statistics, sys, time
from pathlib import Path
import torch; torch.set_num_threads(1)
from threadpoolctl import threadpool_limits; threadpool_limits(1)
import polars as pl
from shopmind.api.main import freeze_startup_objects
from shopmind.config import load_settings
from shopmind.risk.schemas import RiskEvent
from shopmind.shop import Shop

home, n, freeze, service = Path(sys.argv[1]), int(sys.argv[3]), sys.argv[4] == "freeze", sys.argv[5] == "service"
thresholds = tuple(int(x) for x in sys.argv[2].split(","))
gc.set_threshold(*thresholds)
shop = Shop.open(load_settings(home=home, cache_url="memory://"))
if freeze:
    freeze_startup_objects()
catalog = pl.read_parquet(home / "data" / "items.parquet", columns=["item_id"])["item_id"].to_list()
rng, now = random.Random(1), int(time.time() * 1000)

def event(i):
    kind = "payment" if i % 3 else "order"
    return RiskEvent(event_id=f"gc{now}-{i}", kind=kind, ts_ms=int(time.time() * 1000), user_id=f"u{rng.randrange(20000) + 1:07d}",
                     amount=round(rng.lognormvariate(3.5, 1.0), 2), card=f"card-{rng.randrange(5000)}",
                     device_id=f"dev-{rng.randrange(3000)}", ip=f"10.0.{rng.randrange(12)}.{rng.randrange(250)}",
                     ip_country="DE", shipping_country="DE",
                     items=[{"item_id": rng.choice(catalog)}] if kind == "order" else [])

events = [event(i) for i in range(n)]
decide = shop.risk.decide if service else shop.risk.engine().decide
for e in events[:500]:  # warm-up, untimed
    decide(e)
pauses, started = [], [0.0]

def record(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses.append((info["generation"], (time.perf_counter() - started[0]) * 1000))

gc.callbacks.append(record)
lat = []
for e in events[500:]:
    t = time.perf_counter()
    decide(e)
    lat.append((time.perf_counter() - t) * 1000)
gc.callbacks.remove(record)
lat.sort()
t = time.perf_counter()
gc.collect()  # what one full collection costs now, the pause a long-running server meets now and then
full_ms = (time.perf_counter() - t) * 1000
out = {"thresholds": list(thresholds), "path": "RiskService.decide" if service else "RiskEngine.decide", "frozen": gc.get_freeze_count(), "full_collection_ms": round(full_ms, 1), "decisions": len(lat), "p50_ms": round(statistics.median(lat), 3),
       "p99_ms": round(lat[int(0.99 * len(lat))], 3), "p99.9_ms": round(lat[int(0.999 * len(lat))], 3),
       "max_ms": round(lat[-1], 1), "tracked_objects": len(gc.get_objects())}
for g in (0, 1, 2):
    ms = [p for gen, p in pauses if gen == g]
    out[f"gen{g}_collections_longest_total_ms"] = [len(ms), round(max(ms), 1) if ms else 0.0, round(sum(ms), 1)]
print(json.dumps(out), flush=True)
shop.close()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True, help="a shop built by bench/risk_latency.py --behaviour")
    ap.add_argument("--decisions", type=int, default=40000)
    ap.add_argument("--thresholds", nargs="+", default=["50000,20,100", "10000,10,100", "700,10,10"])
    ap.add_argument("--no-freeze", action="store_true", help="leave the opened shop's objects to the collector")
    ap.add_argument("--service", action="store_true",
                    help="time RiskService.decide (decision committed, answer kept for retries) instead of the engine")
    args = ap.parse_args()
    if not (args.home / "bench-behaviour.txt").exists():
        sys.exit(f"{args.home} is not a shop built by bench/risk_latency.py --behaviour")
    for thresholds in args.thresholds:
        run = subprocess.run([sys.executable, "-c", CHILD, str(args.home), thresholds, str(args.decisions),
                              "no" if args.no_freeze else "freeze", "service" if args.service else "engine"],
                             capture_output=True, text=True, check=True)
        print(run.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
