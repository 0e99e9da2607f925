"""Cost of one velocity observation (record + all features of the event), in process and in Redis.

    .venv/bin/python bench/risk_velocity.py [--events 100000] [--days 30] [--terminals 400]
        [--stores memory,memory-indexed,redis] [--redis-url redis://127.0.0.1:6379/0]

Simulates --events payment events spread over --days with five entities each and cardinalities of a
mid-sized shop: 25,000 users whose activity is heavy-tailed (Zipf), 1-2 cards and 1-3 devices per
user plus a few cards shared by several users (fraud rings), home IPs shared by a few users plus 20
carrier-NAT IPs carrying 10% of the traffic, and --terminals terminals with Zipf-distributed volume.
3% of events arrive late (up to 10 minutes). Every observe is timed on its own; the figures are the
median, p90 and p99 in µs over all events, and separately over the last 20% (when the 30-day windows are
full), for each store; for Redis also the mean time spent inside the Lua script (from INFO commandstats
deltas). The in-process store's cost grows with the size of the observed entities, so the largest
entities are printed too; the Redis store reads at most an hour of events per window edge. Redis keys go under a fresh prefix
that is deleted afterwards. For the in-process stores the run also reports how many objects the cycle
collector tracks for the store and how long one full collection takes with it alive (median of five):
`memory-indexed` is the in-process store with every series indexed from its first event (the layout
before small series were kept as tuples, `_Series.SMALL = 0`), to compare the two in one run. Results go to stdout as Markdown and to bench/out/risk_velocity.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopmind.risk.velocity import DAY_MS, MemoryVelocityStore, Observation, _Series  # noqa: E402
from shopmind.risk.velocity_redis import RedisVelocityStore  # noqa: E402

T0 = 1_767_225_600_000


def simulate(n_events: int, days: int, n_terminals: int, seed: int = 11) -> list[Observation]:
    rng = random.Random(seed)
    n_users = 25_000
    weights = [1 / (i + 1) ** 0.8 for i in range(n_users)]
    users = rng.choices(range(n_users), weights=weights, k=n_events)
    term_w = [1 / (i + 1) for i in range(n_terminals)]
    terminals = rng.choices(range(n_terminals), weights=term_w, k=n_events)
    span = days * DAY_MS
    stamps = sorted(T0 + rng.randrange(span) for _ in range(n_events))
    events = []
    for i, (u, term, ts) in enumerate(zip(users, terminals, stamps)):
        card = f"card-{u}-{rng.randrange(2) if u % 3 == 0 else 0}"
        if rng.random() < 0.002:
            card = f"ring-card-{rng.randrange(30)}"
        device = f"dev-{u}-{rng.randrange(1 + u % 3)}"
        ip = f"nat-{rng.randrange(20)}" if rng.random() < 0.1 else f"ip-{u // 3}"
        ents = {"user": f"user-{u}", "card": card, "device": device, "ip": ip, "terminal": f"term-{term}"}
        if rng.random() < 0.03:
            ts -= rng.randrange(600_000)
        events.append(Observation(f"ev-{i}", ts, round(rng.lognormvariate(3.5, 1.0), 2), ents))
    return events


def run(store, events: list[Observation]) -> list[float]:
    timings = []
    clock = time.perf_counter_ns
    for e in events:
        start = clock()
        store.observe(e)
        timings.append((clock() - start) / 1000)
    return timings


def summary(us: list[float]) -> dict[str, float]:
    q = statistics.quantiles(us, n=100)
    return {"median_us": round(statistics.median(us), 1), "p90_us": round(q[89], 1), "p99_us": round(q[98], 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--terminals", type=int, default=400)
    ap.add_argument("--stores", default="memory,redis")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()

    events = simulate(args.events, args.days, args.terminals)
    sizes = {kind: Counter(e.entities[kind] for e in events) for kind in events[0].entities}
    print("| entity | distinct keys | events of the largest key | mean events per key |")
    print("|---|---:|---:|---:|")
    for kind, c in sizes.items():
        print(f"| {kind} | {len(c):,} | {max(c.values()):,} | {len(events) / len(c):.1f} |")

    rows = []
    for name in args.stores.split(","):
        small = _Series.SMALL
        gc.collect()
        tracked_before = len(gc.get_objects())
        if name.startswith("memory"):
            if name == "memory-indexed":
                _Series.SMALL = 0
            store = MemoryVelocityStore()
        else:
            store = RedisVelocityStore(args.redis_url, prefix=f"bench{uuid.uuid4().hex[:8]}-vel")
        before = store._r.info("commandstats").get("cmdstat_evalsha") if name == "redis" else None
        try:
            us = run(store, events)
            if name == "redis":        # time inside Redis (the Lua script), from INFO deltas: no reset
                after = store._r.info("commandstats").get("cmdstat_evalsha", {})
                calls = after.get("calls", 0) - (before or {}).get("calls", 0)
                server_us = (after.get("usec", 0) - (before or {}).get("usec", 0)) / max(calls, 1)
            if name.startswith("memory"):
                gc.collect()
                tracked = len(gc.get_objects()) - tracked_before
                pauses = []
                for _ in range(5):
                    start = time.perf_counter()
                    gc.collect()
                    pauses.append((time.perf_counter() - start) * 1000)
        finally:
            _Series.SMALL = small
            if name == "redis":
                keys = list(store._r.scan_iter(match=store._prefix + b":*", count=5000))
                for i in range(0, len(keys), 5000):
                    store._r.delete(*keys[i:i + 5000])
        tail = us[int(len(us) * 0.8):]
        rows.append({"store": name, "events": len(events), "all": summary(us), "last_20pct": summary(tail),
                     "total_s": round(sum(us) / 1e6, 2)})
        if name == "redis":
            rows[-1]["server_script_mean_us"] = round(server_us, 1)
        else:
            rows[-1]["gc_tracked_objects"] = tracked
            rows[-1]["gc_full_collection_ms"] = round(statistics.median(pauses), 1)
        del store
        if len(rows) == 1:
            print("\n| store | median µs | p90 µs | p99 µs | median µs (last 20%) | p99 µs (last 20%) | total s |")
            print("|---|---:|---:|---:|---:|---:|---:|")
        a, t = rows[-1]["all"], rows[-1]["last_20pct"]
        print(f"| {name} | {a['median_us']} | {a['p90_us']} | {a['p99_us']} | {t['median_us']} | {t['p99_us']} | {rows[-1]['total_s']} |",
              flush=True)
    for row in rows:
        if "gc_tracked_objects" in row:
            print(f"\n{row['store']}: {row['gc_tracked_objects']:,} objects tracked by the cycle collector, "
                  f"one full collection {row['gc_full_collection_ms']} ms (median of 5)")
        if "server_script_mean_us" in row:
            print(f"\nredis: mean time inside the Lua script {row['server_script_mean_us']} µs per observe "
                  "(the rest is the round trip and the client)")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "python": platform.python_version(), "args": vars(args),
            "largest": {k: max(c.values()) for k, c in sizes.items()}}
    (out / "risk_velocity.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
