"""Latency of risk decisions: in process and over HTTP, with 50 rules and the LightGBM model.

    .venv/bin/python bench/risk_latency.py [--rates 500,1000,2000,3000] [--seconds 15] [--decisions 5000]
                                           [--users 20000] [--days 60] [--home DIR] [--http-only]

Builds a shop (20,000 generated users over 60 days: a model of full-grown trees, as a real shop's
history gives; a small shop's model is much cheaper to explain), replays its orders and payments into the decision
log, trains the risk model on them, adds 50 enforced rules over velocity, event and model fields (and a
block list of 1,000 cards), then:
  - in process: `RiskEngine.decide` alone (features, velocity windows, rules, model with TreeSHAP reasons)
    and `RiskService.decide` (the same plus the durable, committed decision-log write), one after the
    other on --decisions events with realistic cardinalities (users, 5,000 cards, 3,000 devices and IPs);
  - over HTTP: `shopmind serve` in its own process, driven by an open-loop load generator in another
    process (raw asyncio, 64 keep-alive connections, latency measured from each request's scheduled
    send time, so queueing counts) posting decisions at each --rates for --seconds, after an untimed
    5-second warm-up at 50/s.
Medians and p99 in milliseconds. The machine's two cores are shared by the server and the load generator.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen import drive  # noqa: E402  (bench/loadgen.py)
from server import running_server  # noqa: E402



def requests(key: str, rate: float, n: int, users: int) -> list[bytes]:
    """n decision requests with realistic cardinalities (users, 5,000 cards, 3,000 devices and IPs)."""
    rng = random.Random(int(rate))
    out = []
    for i in range(n):
        body = json.dumps({"event_id": f"h{int(rate)}-{i}", "kind": "payment" if i % 3 else "order",
                           "user_id": f"u{rng.randrange(users) + 1:07d}", "amount": round(rng.lognormvariate(3.5, 1.0), 2),
                           "card": f"card-{rng.randrange(5000)}", "device_id": f"dev-{rng.randrange(3000)}",
                           "ip": f"10.0.{rng.randrange(12)}.{rng.randrange(250)}",
                           "ip_country": rng.choice(["DE", "FR", "NG"]), "shipping_country": "DE"}).encode()
        out.append(b"POST /v1/risk/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   + f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


RULE_TEMPLATES = [
    "event.amount > {a}.0 && card.count_1d >= {c}",
    "user.distinct_card_7d > {c} || device.distinct_user_30d > {c}",
    "event.ip_country != event.shipping_country && event.amount > {a}.0",
    "ip.count_1h > {c} && event.kind == 'payment'",
    "model.score > 0.{c} && event.new_card",
    "card.sum_1d > {a}.0 && card.distinct_device_7d >= {c}",
    "event.new_device && event.amount > {a}.0 && user.count_30d < {c}",
    "device.count_1h >= {c} && event.amount < 5.0",
    "user.max_30d > 0.0 && event.amount > 3.0 * user.max_30d && event.amount > {a}.0",
    "event.account_age_days >= 0.0 && event.account_age_days < 1.0 && event.amount > {a}.0",
]


def build(home: Path, users: int, days: int) -> tuple[str, int]:
    from shopmind.auth import Scope, create_key
    from shopmind.config import load_settings
    from shopmind.risk.rules import Rule
    from shopmind.risk.training import replay_history, train_risk_model
    from shopmind.shop import Shop
    from shopmind.synth import generate_shop, write_shop

    shop, _ = Shop.init(load_settings(home=home, cache_url="memory://"))
    paths = write_shop(generate_shop(n_users=users, days=days, seed=11), home / "data", "parquet")
    for kind in ("items", "users", "events", "orders", "payments"):
        shop.import_file(paths[kind], kind, actor="bench")
    replay_history(shop)
    train_risk_model(shop, "bench", cutoff_ms=2**50)
    shop.risk.add_to_list("stolen_cards", "card", [f"stolen-{i}" for i in range(1000)], "bench")
    shop.risk.put_rule(Rule("stolen_card", "lists.stolen_cards", "block", mode="enforce"), "bench")
    for i in range(49):
        expression = RULE_TEMPLATES[i % len(RULE_TEMPLATES)].format(a=100 + 13 * i, c=2 + i % 7)
        shop.risk.put_rule(Rule(f"rule_{i:02d}", expression, "score", weight=0.02, mode="enforce"), "bench")
    key = create_key(shop.store, "bench", frozenset({Scope.risk}))
    n_rules = len(shop.risk.rules())
    shop.close()
    return key, n_rules


def in_process(home: Path, users: int, n: int) -> dict:
    from shopmind.config import load_settings
    from shopmind.risk.features import vector
    from shopmind.risk.schemas import RiskEvent
    from shopmind.shop import Shop

    import gc

    from shopmind.api.main import SERVING_GC_THRESHOLD

    gc.set_threshold(SERVING_GC_THRESHOLD, 20, 100)  # what the server sets at startup
    shop = Shop.open(load_settings(home=home, cache_url="memory://"))
    rng = random.Random(1)
    now = int(time.time() * 1000)

    def event(i: int, tag: str) -> RiskEvent:
        return RiskEvent(event_id=f"{tag}{i}", kind="payment" if i % 3 else "order", ts_ms=now + i * 50,
                         user_id=f"u{rng.randrange(users) + 1:07d}", amount=round(rng.lognormvariate(3.5, 1.0), 2),
                         card=f"card-{rng.randrange(5000)}", device_id=f"dev-{rng.randrange(3000)}",
                         ip=f"10.0.{rng.randrange(12)}.{rng.randrange(250)}", ip_country=rng.choice(["DE", "FR", "NG"]),
                         shipping_country="DE")

    engine = shop.risk.engine()
    results = {}
    rows = []
    def decide(e: RiskEvent) -> None:
        rows.append(vector(engine.decide(e).features))

    for name, fn in (("engine.decide (no log)", decide),
                     ("service.decide (committed log)", lambda e: shop.risk.decide(e))):
        events = [event(i, name[:3]) for i in range(n)]
        for e in events[:200]:
            fn(e)  # warm-up
        lat = []
        for e in events[200:]:
            t = time.perf_counter()
            fn(e)
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        results[name] = {"n": len(lat), "p50_ms": round(statistics.median(lat), 3),
                         "p99_ms": round(lat[int(0.99 * len(lat))], 3), "rules": len(engine.rules),
                         "model": engine.model_version is not None}
    # the model's share alone, on the same events' feature vectors: path attributions (what a decision
    # carries) against exact TreeSHAP (on demand)
    for name, exact in (("model.explain, path attribution", False), ("model.explain, exact TreeSHAP", True)):
        lat = []
        for row in rows[200:]:
            t = time.perf_counter()
            engine.model.explain(row, exact=exact)
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        results[name] = {"n": len(lat), "p50_ms": round(statistics.median(lat), 3),
                         "p99_ms": round(lat[int(0.99 * len(lat))], 3)}
    trees = engine.model.booster_.dump_model()["tree_info"]
    results["model size"] = {"trees": len(trees), "mean_leaves": round(sum(t["num_leaves"] for t in trees) / len(trees), 1)}
    shop.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--decisions", type=int, default=5000)
    ap.add_argument("--rates", default="500,1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--home", type=Path, help="build the shop here once and reuse it on later runs")
    ap.add_argument("--http-only", action="store_true", help="skip the in-process measurements")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        built = home / "bench-key.txt"
        if built.exists():
            key, n_rules = built.read_text().strip(), 50
        else:
            key, n_rules = build(home, args.users, args.days)
            built.write_text(key)  # a throw-away key of a throw-away bench shop
        report = {"rules": n_rules, "in_process": {} if args.http_only else in_process(home, args.users, args.decisions),
                  "http": []}
        print(json.dumps(report["in_process"], indent=2), flush=True)
        env = {**os.environ, "SHOPMIND_HOME": str(home), "SHOPMIND_CACHE_URL": "memory://", "SHOPMIND_LOG_LEVEL": "WARNING"}
        with running_server(env) as port:
            # untimed warm-up: the engine is built and the first users' profiles are read on first use
            drive(port, 50, 5, requests(key, 50, 250, args.users), b'"decision"')
            for rate in [float(r) for r in args.rates.split(",")]:
                report["http"].append(drive(port, rate, args.seconds,
                                            requests(key, rate, int(rate * args.seconds), args.users), b'"decision"'))
                print(json.dumps(report["http"][-1]), flush=True)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
