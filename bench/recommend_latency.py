"""Serving latency of GET /v1/users/{id}/recommendations with a 100,000-item catalog.

    .venv/bin/python bench/recommend_latency.py [--items 100000] [--users 2000] [--rates 100,250,500]
        [--seconds 20]

Builds a shop with --items catalog items and --users users with 30 item events each, registers a
behaviour model over the whole catalog (one epoch of sampled-softmax training: latency does not depend
on how good the weights are), starts `shopmind serve`, and drives it from a separate process with an
open-loop load generator (asyncio + httpx): requests are sent on a fixed schedule at each target rate,
whatever the server's speed, and each latency is measured from its scheduled send time, so queueing
shows up in the figures (no coordinated omission). Reports achieved rate, p50, p99 and errors per rate,
plus the in-process cost of one recommendation (no HTTP) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server import running_server  # noqa: E402  (bench/server.py; bench/ is on sys.path when run as a script)

LOADGEN = r"""
import asyncio, json, sys, time, httpx
port, key, rate, seconds, users = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
async def main():
    lat, errors = [], 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key},
                                 timeout=10, limits=limits) as http:
        start = time.perf_counter() + 0.2
        n = int(rate * seconds)
        async def one(i):
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0, due - time.perf_counter()))
            try:
                r = await http.get(f"/v1/users/u{i % users}/recommendations?k=10")
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            done = time.perf_counter()
            if ok: lat.append(done - due)
            else: errors += 1
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else None
    print(json.dumps({"target_rps": rate, "achieved_rps": round(len(lat) / wall, 1), "p50_ms": q(0.5),
                      "p99_ms": q(0.99), "errors": errors, "requests": n}))
asyncio.run(main())
"""


def build(home: Path, n_items: int, n_users: int) -> str:
    import numpy as np

    from shopmind.auth import Scope, create_key
    from shopmind.config import load_settings
    from shopmind.evaluation import Sequences
    from shopmind.recommend.behaviour import BehaviourRecommender
    from shopmind.shop import Shop

    shop, _ = Shop.init(load_settings(home=home))
    for start in range(0, n_items, 10_000):
        shop.ingest("items", [{"item_id": f"i{n}", "title": f"Item {n}", "category": f"C{n % 20} > S{n % 7}"}
                              for n in range(start, min(n_items, start + 10_000))], actor="bench")
    rng = np.random.default_rng(0)
    shop.ingest("users", [{"user_id": f"u{u}", "consent_personalization": True} for u in range(n_users)], actor="bench")
    events = [{"event_id": f"e{u}-{j}", "user_id": f"u{u}", "type": "view", "item_id": f"i{int(x)}",
               "ts": f"2026-01-{1 + j % 28:02d}T10:00:00Z"}
              for u in range(n_users) for j, x in enumerate(rng.integers(0, n_items, 30))]
    for start in range(0, len(events), 10_000):
        shop.ingest("events", events[start:start + 10_000], actor="bench")
    lists = [[f"i{n}" for n in range(n_items)]] + [[f"i{int(x)}" for x in rng.integers(0, n_items, 30)]
                                                    for _ in range(n_users)]
    seqs = Sequences.from_lists(["all"] + [f"s{u}" for u in range(n_users)], lists)
    model = BehaviourRecommender(max_epochs=1, n_negatives=512, valid_users=200).fit(seqs)
    shop.registry.register("behaviour", model, card={"bench": True}, subjects=[])
    key = create_key(shop.store, "bench", frozenset({Scope.recommend}))
    started = time.perf_counter()
    for u in range(200):
        shop.recommend(f"u{u}", k=10)
    in_process_ms = (time.perf_counter() - started) / 200 * 1000
    shop.close()
    return key, in_process_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rates", default="100,250,500")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        key, in_process_ms = build(home, args.items, args.users)
        print(json.dumps({"in_process_ms_per_request": round(in_process_ms, 2)}), flush=True)
        env = {**os.environ, "SHOPMIND_HOME": str(home), "PYTHONPATH": str(ROOT)}
        with running_server(env) as port:
            results = []
            for rate in [float(r) for r in args.rates.split(",")]:
                out = subprocess.run([sys.executable, "-c", LOADGEN, str(port), key, str(rate), str(args.seconds),
                                      str(args.users)], capture_output=True, text=True, check=True).stdout
                results.append(json.loads(out))
                print(json.dumps(results[-1]), flush=True)
    print("\n| target req/s | achieved req/s | p50 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['target_rps']:.0f} | {r['achieved_rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")


if __name__ == "__main__":
    main()
