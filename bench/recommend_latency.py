"""Serving latency of GET /v1/users/{id}/recommendations with a 100,000-item catalog.

    .venv/bin/python bench/recommend_latency.py [--items 100000] [--users 2000] [--rates 100,250,500]
        [--seconds 20] [--workers 1] [--cache-url memory://] [--blend] [--width 256]
        [--servers 32:32:bf16:eager,32:32:bf16:traced] [--returning-rates 100,200] [--arriving-rates 100,200]

Builds a shop with --items catalog items in 500 topics and --users users with 30 item events each
(mostly from two topics), registers a behaviour model of width --width over the whole catalog (one epoch of
sampled-softmax training on 20,000 more such users: latency does not depend on how good the weights
are, but the item index's recall depends on the vectors having cluster structure, as trained ones
do), starts `shopmind serve`, and drives it from a separate process with an
open-loop load generator (raw asyncio streams, 64 keep-alive connections): requests are sent on a fixed schedule at each target rate,
whatever the server's speed, and each latency is measured from its scheduled send time, so queueing
shows up in the figures (no coordinated omission; bench/loadgen.py). Two kinds of traffic are timed separately:
repeat visitors (--users of them, each asked once in an untimed warm-up, then request i asks for
user i mod --users: their state and candidates come from the cache) and first visits (--cold-rates,
every request a user never asked before: database reads, a transformer pass and a catalog scan), and,
with --returning-rates, repeat visitors who view one more item about two seconds before each request (a
one-event ingestion, counted in the rate; figures per route too), whose answer the background state
refresh recomputes (refresh_states) or the request does; with --arriving-rates, visitors never asked
before who view one item about two seconds before their first request (their lists are not cached
yet). Reports achieved rate, p50, p99 and errors
per rate, plus the in-process cost of one recommendation (no HTTP), first request and repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen import drive, raw_post  # noqa: E402  (bench/loadgen.py; bench/ is on sys.path when run as a script)
from server import running_server  # noqa: E402



def build(home: Path, n_items: int, n_users: int, blend: bool = False, width: int = 256) -> str:
    import numpy as np

    from shopmind.auth import Scope, create_key
    from shopmind.config import load_settings
    from shopmind.evaluation import Sequences
    from shopmind.recommend.behaviour import BehaviourRecommender
    from shopmind.shop import Shop

    shop, _ = Shop.init(load_settings(home=home))
    rng = np.random.default_rng(0)
    # A catalog with structure, as real ones have: 500 topics; each user mostly follows two of them.
    topic_of = rng.integers(0, 500, n_items)
    by_topic = [np.flatnonzero(topic_of == t) for t in range(500)]
    for start in range(0, n_items, 10_000):
        shop.ingest("items", [{"item_id": f"i{n}", "title": f"Item {n}", "category": f"C{topic_of[n] % 20} > S{topic_of[n]}"}
                              for n in range(start, min(n_items, start + 10_000))], actor="bench")

    def history() -> list[int]:
        tastes = rng.integers(0, 500, 2)
        return [int(rng.choice(by_topic[rng.choice(tastes)])) if rng.random() < 0.8 else int(rng.integers(0, n_items))
                for _ in range(30)]

    served = [history() for _ in range(n_users)]
    for start in range(0, n_users, 10_000):
        shop.ingest("users", [{"user_id": f"u{u}", "consent_personalization": True}
                              for u in range(start, min(n_users, start + 10_000))], actor="bench")
    events = [{"event_id": f"e{u}-{j}", "user_id": f"u{u}", "type": "view", "item_id": f"i{x}",
               "ts": f"2026-01-{1 + j % 28:02d}T10:{j:02d}:00Z"}
              for u in range(n_users) for j, x in enumerate(served[u])]
    for start in range(0, len(events), 10_000):
        shop.ingest("events", events[start:start + 10_000], actor="bench")
    # Training data: the served users plus 20,000 more like them, and every item at least once.
    lists = [[f"i{x}" for x in h] for h in served + [history() for _ in range(20_000)]]
    lists += [[f"i{n}" for n in chunk] for chunk in np.array_split(rng.permutation(n_items), n_items // 25)]
    seqs = Sequences.from_lists([f"s{u}" for u in range(len(lists))], lists)
    # The width is fixed, not left to the size rule: the rule counts interactions, which grow with the
    # number of first-visit users a run asks for, so runs with other --cold-rates served models of
    # different widths (128 on 2026-12-02, 256 on 2026-12-03) and their latencies were not comparable.
    model = BehaviourRecommender(max_epochs=1, n_negatives=512, valid_users=200, d_model=width).fit(seqs)
    if blend:  # forced on (rule z, weight 0.2) to time the blend's serving path, whatever validation says
        from shopmind.recommend.blend import attach_blend

        attach_blend(model, seqs, kinds=("z",), weights=(0.2,), valid_users=500)
    shop.registry.register("behaviour", model, card={"bench": True, "blend": blend}, subjects=[])
    key = create_key(shop.store, "bench", frozenset({Scope.recommend, Scope.ingest}))  # ingest: --returning-rates
    import torch

    torch.set_num_threads(1)  # as `shopmind serve` runs (OMP_NUM_THREADS=1): one request per thread
    shop.recommend("u0", k=10)  # loads the model and builds the item index once
    timings = {}
    for name in ("first_request_ms", "repeat_request_ms"):
        started = time.perf_counter()
        for u in range(1, 201):
            shop.recommend(f"u{u}", k=10)
        timings[name] = round((time.perf_counter() - started) / 200 * 1000, 2)
    # Which batched scan this processor gets (recommend/index.py races bfloat16 against float32):
    # runs on machines with and without bfloat16 instructions are not comparable.
    version, served = shop.recommender.behaviour()
    items = shop.recommender._catalog(version, served).items
    timings["batched_scan"] = "bfloat16" if items.coarse is not None else "float32"
    timings["f32_over_bf16_time"] = round(items.coarse_speedup_, 3) if items.coarse_speedup_ else None
    timings["cpu"] = processor()
    shop.close()
    return key, timings


def processor() -> str:
    """The processor's model name and whether it has bfloat16 instructions (Linux /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    first = {}  # the first processor's fields
    for line in info.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    bf16 = [flag for flag in first.get("flags", "").split() if flag in ("avx512_bf16", "amx_bf16")]
    return (f"{first.get('model name', '?')} (family {first.get('cpu family', '?')}, model {first.get('model', '?')}, "
            f"{os.cpu_count()} cores; bfloat16 instructions: {', '.join(bf16) or 'none'})")


def loadgen(port: int, key: str, rate: float, seconds: float, first_user: int, users: int) -> dict:
    """Request i asks for user first_user + i mod users."""
    requests = [f"GET /v1/users/u{first_user + j}/recommendations?k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"X-API-Key: {key}\r\n\r\n".encode() for j in range(users)]
    return drive(port, rate, seconds, requests, b'"items"')


def _views_then_gets(port: int, key: str, rate: float, seconds: float, user, event_prefix: str, seed: int) -> dict:
    """Request j asks for recommendations for user(j), whose one-event view (POST /v1/events, an item drawn
    with `seed`) is sent about two seconds of requests earlier (`rate` requests). Both kinds count in
    the rate."""
    n = int(rate * seconds)
    lead = max(1, int(rate))
    rng = random.Random(seed)
    base = datetime.now(timezone.utc)

    def get(j: int) -> bytes:
        return (f"GET /v1/users/{user(j)}/recommendations?k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"X-API-Key: {key}\r\n\r\n").encode()

    def view(j: int) -> bytes:
        body = json.dumps([{"event_id": f"{event_prefix}-{int(rate)}-{j}", "user_id": user(j), "type": "view",
                            "item_id": f"i{rng.randrange(ITEMS[0])}",
                            "ts": (base + timedelta(milliseconds=j)).isoformat()}]).encode()
        return raw_post("/v1/events", key, body)

    mixed = [view(j) for j in range(min(lead, n))]
    for j in range(n):
        if j + lead < n:
            mixed.append(view(j + lead))
        mixed.append(get(j))
    return drive(port, rate, seconds, mixed, b'"items"|"written"')


def loadgen_returning(port: int, key: str, rate: float, seconds: float, users: int, tag: str) -> dict:
    """Repeat visitors who come back after viewing one more item: request i asks for user i mod users,
    and that user's view is sent about two seconds of requests earlier, so the cached answer is stale
    when the view arrives."""
    return _views_then_gets(port, key, rate, seconds, lambda j: f"u{j % users}", f"r{tag}", int(rate))


def loadgen_arriving(port: int, key: str, rate: float, seconds: float, first_user: int, tag: str) -> tuple[dict, int]:
    """Visitors no server has seen, who view an item about two seconds of requests before their first
    recommendation request: user first_user + i. Returns the figures and how many users it used."""
    figures = _views_then_gets(port, key, rate, seconds, lambda j: f"u{first_user + j}", f"a{tag}", int(rate) + 7)
    return figures, int(rate * seconds)


ITEMS = [100_000]  # the catalog size of this run (set by main), for loadgen_returning's item ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000, help="repeat visitors, warmed up before the timed runs")
    parser.add_argument("--rates", default="250,500,750")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--cold-rates", default="25,50,100", help="first requests: each user asked once")
    parser.add_argument("--cold-seconds", type=float, default=10)
    parser.add_argument("--arriving-rates", default="",
                        help="visitors never asked before who view an item about two seconds before their first request")
    parser.add_argument("--returning-rates", default="",
                        help="repeat visitors who view one more item about 2 s before each request (--seconds each)")
    parser.add_argument("--workers", type=int, default=1, help="API processes (above 1 needs --cache-url redis://)")
    parser.add_argument("--cache-url", default="memory://")
    parser.add_argument("--blend", action="store_true", help="attach a blend with item kNN (rule z, weight 0.2)")
    parser.add_argument("--width", type=int, default=256, help="the model's d_model (item vectors of width + 1)")
    parser.add_argument("--servers", default="",
                        help="server settings to compare in this run, as THREADS:BATCH[:SCAN][:PASS] "
                             "(api_threads, recommend_batch, SCAN f32 or bf16 for recommend_bf16_scan, PASS eager "
                             "or traced for recommend_traced_pass, refresh or norefresh for refresh_states), e.g. "
                             "32:32:bf16:eager,32:32:bf16:traced; "
                             "default: one server with the settings' defaults")
    args = parser.parse_args()
    ITEMS[0] = args.items
    cold_rates = [float(r) for r in args.cold_rates.split(",") if r]
    servers = [tuple(pair.split(":")) for pair in args.servers.split(",") if pair] or [None]
    for server in servers:
        if server is not None and not (2 <= len(server) <= 5 and all(part.isdigit() for part in server[:2])
                                       and all(part in ("f32", "bf16", "eager", "traced", "refresh", "norefresh")
                                               for part in server[2:])):
            parser.error(f"--servers: {':'.join(server)!r} is not THREADS:BATCH[:f32|bf16][:eager|traced]"
                         "[:refresh|norefresh]")
    arriving = [float(r) for r in args.arriving_rates.split(",") if r]
    n_cold = int(sum(r * args.cold_seconds for r in cold_rates + arriving)) * len(servers)
    if args.cache_url.startswith("redis"):
        import redis

        redis.Redis.from_url(args.cache_url).flushdb()  # no state left from an earlier run
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["SHOPMIND_CACHE_URL"] = args.cache_url
        key, in_process = build(home, args.items, args.users + n_cold, args.blend, args.width)
        print(json.dumps({"in_process": in_process, "workers": args.workers, "cache": args.cache_url}), flush=True)
        if args.cache_url.startswith("redis"):
            redis.Redis.from_url(args.cache_url).flushdb()  # the server starts cold, like the in-memory cache
        results = []
        first = args.users
        for server in servers:
            env = {**os.environ, "SHOPMIND_HOME": str(home), "PYTHONPATH": str(ROOT),
                   "SHOPMIND_WORKERS": str(args.workers)}
            label = "defaults"
            if server is not None:
                env.update(SHOPMIND_API_THREADS=server[0], SHOPMIND_RECOMMEND_BATCH=server[1])
                label = f"{server[0]} threads, batch {server[1]}"
                for part in server[2:]:
                    if part in ("f32", "bf16"):
                        env["SHOPMIND_RECOMMEND_BF16_SCAN"] = str(part == "bf16").lower()
                        label += f", {part} scan"
                    elif part in ("refresh", "norefresh"):
                        env["SHOPMIND_REFRESH_STATES"] = str(part == "refresh").lower()
                        label += f", {part}"
                    else:
                        env["SHOPMIND_RECOMMEND_TRACED_PASS"] = str(part == "traced").lower()
                        label += f", {part} pass"
            if args.cache_url.startswith("redis"):
                redis.Redis.from_url(args.cache_url).flushdb()  # each server starts cold
            with running_server(env) as port:
                # Warm-up, untimed: every worker loads the model and each repeat visitor is seen once.
                loadgen(port, key, 20, 5, 0, args.users)
                loadgen(port, key, 100, args.users / 100, 0, args.users)
                for rate in [float(r) for r in args.rates.split(",") if r]:
                    results.append({"server": label, "visitors": "repeat",
                                    **loadgen(port, key, rate, args.seconds, 0, args.users)})
                    print(json.dumps(results[-1]), flush=True)
                for rate in cold_rates:  # users no server has seen: each first visit is a real one
                    count = int(rate * args.cold_seconds)
                    results.append({"server": label, "visitors": "first",
                                    **loadgen(port, key, rate, args.cold_seconds, first, count)})
                    first += count
                    print(json.dumps(results[-1]), flush=True)
                for rate in arriving:
                    figures, used = loadgen_arriving(port, key, rate, args.cold_seconds, first, str(len(results)))
                    results.append({"server": label, "visitors": "first request after a view", **figures})
                    first += used
                    print(json.dumps(results[-1]), flush=True)
                for rate in [float(r) for r in args.returning_rates.split(",") if r]:
                    results.append({"server": label, "visitors": "returning after a view",
                                    **loadgen_returning(port, key, rate, args.seconds, args.users, str(len(results)))})
                    print(json.dumps(results[-1]), flush=True)
    print(f"\nworkers {args.workers}, cache {args.cache_url}; in process: {in_process}")
    print("| server | visitors | target req/s | achieved req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
        print(f"| {r['server']} | {r['visitors']} | {r['target_rps']:.0f} | {r['achieved_rps']:.0f} | {p50} | {p99} "
              f"| {r['errors']} |")


if __name__ == "__main__":
    main()
