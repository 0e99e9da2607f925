"""Latency of risk decisions: in process and over HTTP, with 50 rules and the LightGBM model.

    .venv/bin/python bench/risk_latency.py [--rates 500,1000,2000,3000] [--seconds 15] [--decisions 5000]
                                           [--users 20000] [--days 60] [--home DIR] [--http-only]
                                           [--behaviour [--train-budget 120]] [--browse]
                                           [--no-gc-freeze] [--gc-thresholds YOUNG,MIDDLE,OLD]

Builds a shop (20,000 generated users over 60 days: a model of full-grown trees, as a real shop's
history gives; a small shop's model is much cheaper to explain), replays its orders and payments into the decision
log, trains the risk model on them, adds 50 enforced rules over velocity, event and model fields (and a
block list of 1,000 cards), then:
  - with --behaviour, a behaviour model is trained first (`shopmind train`'s pipeline, --train-budget
    seconds), as `make demo` does, so the risk model and every order's decision use its feature (how
    unusual the ordered items are for the user); orders carry one or two of the catalog's items either way;
  - in process: `RiskEngine.decide` alone (features, velocity windows, rules, model with TreeSHAP reasons)
    and `RiskService.decide` (the same plus the durable, committed decision-log write), one after the
    other on --decisions events with realistic cardinalities (users, 5,000 cards, 3,000 devices and IPs);
  - over HTTP: `shopmind serve` in its own process, driven by an open-loop load generator in another
    process (raw asyncio, 64 keep-alive connections, latency measured from each request's scheduled
    send time, so queueing counts) posting decisions at each --rates for --seconds, after an untimed
    5-second warm-up at 50/s; with --browse, each order's user also adds an item to their cart about
    a second of requests before the order (an ingestion request, counted in the rate; figures per
    route too).
Medians and p99 in milliseconds (in process also p99.9, the maximum and every cycle collection that ran
in the timed loops, by generation). The machine's two cores are shared by the server and the load
generator. --no-gc-freeze and --gc-thresholds compare the collector settings the server uses
(bench/gc_thresholds.py does so for the engine alone, in fresh processes).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen import drive, raw_post  # noqa: E402  (bench/loadgen.py)
from server import running_server  # noqa: E402



def order_items(rng: random.Random, catalog: list[str]) -> list[dict]:
    """One or two of the catalog's items, as an order carries them."""
    return [{"item_id": rng.choice(catalog), "price": round(rng.lognormvariate(3.0, 0.8), 2)}
            for _ in range(rng.randint(1, 2))]


def requests(key: str, rate: float, n: int, users: int, catalog: list[str], ingest_key: str | None = None,
             lead_s: float = 1.0) -> list[bytes]:
    """n decision requests with realistic cardinalities (users, 5,000 cards, 3,000 devices and IPs);
    orders (a third) carry items. With `ingest_key`, each order's user first adds an item to their
    cart: a one-event `POST /v1/events` about `lead_s` seconds of requests before the order (as a
    checkout follows the cart), which refreshes the user's behaviour state in the server's background."""
    rng = random.Random(int(rate))
    run_tag = int(time.time())  # unique ids per invocation: a repeated event id is a retry, answered from the log
    out, orders = [], {}
    for i in range(n):
        kind = "payment" if i % 3 else "order"
        user = f"u{rng.randrange(users) + 1:07d}"
        body = json.dumps({"event_id": f"h{run_tag}-{int(rate)}-{i}", "kind": kind,
                           "user_id": user, "amount": round(rng.lognormvariate(3.5, 1.0), 2),
                           "card": f"card-{rng.randrange(5000)}", "device_id": f"dev-{rng.randrange(3000)}",
                           "ip": f"10.0.{rng.randrange(12)}.{rng.randrange(250)}",
                           "ip_country": rng.choice(["DE", "FR", "NG"]), "shipping_country": "DE",
                           "items": order_items(rng, catalog) if kind == "order" else []}).encode()
        out.append(raw_post("/v1/risk/decisions", key, body))
        if kind == "order":
            orders[i] = user
    if ingest_key is None:
        return out
    lead = max(1, int(rate * lead_s))

    def view(i: int) -> bytes:
        ts = datetime.now(timezone.utc).isoformat()
        body = json.dumps([{"event_id": f"v{run_tag}-{int(rate)}-{i}", "user_id": orders[i], "type": "add_to_cart",
                            "item_id": rng.choice(catalog), "ts": ts}]).encode()
        return raw_post("/v1/events", ingest_key, body)

    mixed = [view(i) for i in range(min(lead, n)) if i in orders]  # the first orders' views come first
    for i, decision in enumerate(out):
        if i + lead in orders:
            mixed.append(view(i + lead))
        mixed.append(decision)
    return mixed


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


def build(home: Path, users: int, days: int, behaviour: bool = False, train_budget: float = 120) -> tuple[str, int]:
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
    if behaviour:  # first, as `make demo` does: the replayed history and the risk model then carry its feature
        from shopmind.risk.training import replay_as_of_time
        from shopmind.training.pipeline import train_all, train_behaviour_as_of

        trained = train_all(shop, "bench", time_budget_s=train_budget)
        if not trained["behaviour"].get("promoted"):
            sys.exit(f"the behaviour model was not trained and promoted: {trained['behaviour']}")
        # replays take the feature only from a version trained before each order (`risk replay
        # --behaviour-as-of auto`, as `make demo` runs it)
        train_behaviour_as_of(shop, replay_as_of_time(shop), "bench", time_budget_s=min(train_budget, 60))
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


class GcPauses:
    """Every cycle collection that runs while registered: its generation and how long it held the GIL."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._started) * 1000))

    def summary(self) -> dict:
        out = {}
        for generation in (0, 1, 2):
            ms = [p for g, p in self.pauses if g == generation]
            out[f"gen{generation}"] = {"count": len(ms), "max_ms": round(max(ms), 2) if ms else 0.0,
                                       "total_ms": round(sum(ms), 1)}
        return out


def _percentiles(lat: list[float]) -> dict:
    lat = sorted(lat)
    return {"n": len(lat), "p50_ms": round(statistics.median(lat), 3), "p99_ms": round(lat[int(0.99 * len(lat))], 3),
            "p99.9_ms": round(lat[int(0.999 * len(lat))], 3), "max_ms": round(lat[-1], 3)}


def in_process(home: Path, users: int, n: int, catalog: list[str], gc_freeze: bool = True,
               gc_thresholds: tuple[int, ...] | None = None) -> dict:
    from shopmind.config import load_settings
    from shopmind.risk.features import vector
    from shopmind.risk.schemas import RiskEvent
    from shopmind.shop import Shop

    from shopmind.api.main import SERVING_GC_THRESHOLDS

    gc.set_threshold(*(gc_thresholds or SERVING_GC_THRESHOLDS))  # what the server sets at startup
    import torch
    from threadpoolctl import threadpool_limits

    # One thread for torch and BLAS, as `shopmind serve` runs (OMP_NUM_THREADS=1): with two, a
    # behaviour-model pass here took 13 ms instead of 2 (OpenMP threads spinning against each other).
    torch.set_num_threads(1)
    threadpool_limits(1)
    shop = Shop.open(load_settings(home=home, cache_url="memory://"))
    if gc_freeze:  # as `shopmind serve` does once its shop is open
        from shopmind.api.main import freeze_startup_objects

        freeze_startup_objects()
    pauses = GcPauses()
    rng = random.Random(1)
    now = int(time.time() * 1000)
    run_tag = f"{now}-"  # unique ids per invocation: a repeated event id is a retry, answered from the log

    orders_of_part: dict[int, list[int]] = {}

    def event(i: int, tag: str, part: int, user: str | None = None) -> RiskEvent:
        """A decision request; users are drawn from one third of the shop's users (`part` 0 to 2), so
        the runs of users not decided before share none (whose behaviour states an earlier run cached),
        and without replacement within a run (drawn with it, 31% of a run's decisions were of users it
        had decided already: an easier mix than "not decided before" says), while a third holds enough."""
        kind = "payment" if i % 3 else "order"
        if user is None:
            order = orders_of_part.setdefault(part, rng.sample(range(users // 3), users // 3))
            user = f"u{part * (users // 3) + order[i % len(order)] + 1:07d}"
        # the clock at creation: never ahead of the server, which refuses times over 5 minutes ahead
        return RiskEvent(event_id=f"{run_tag}{tag}{i}", kind=kind, ts_ms=int(time.time() * 1000),
                         user_id=user, amount=round(rng.lognormvariate(3.5, 1.0), 2),
                         card=f"card-{rng.randrange(5000)}", device_id=f"dev-{rng.randrange(3000)}",
                         ip=f"10.0.{rng.randrange(12)}.{rng.randrange(250)}", ip_country=rng.choice(["DE", "FR", "NG"]),
                         shipping_country="DE", items=order_items(rng, catalog) if kind == "order" else [])

    engine = shop.risk.engine()
    results = {}
    rows = []
    def decide(e: RiskEvent) -> None:
        rows.append(vector(engine.decide(e).features))

    behaviour = shop.recommender.behaviour() is not None
    first_users: list[str] = []
    runs = [("engine.decide (no log)", decide), ("service.decide (committed log)", lambda e: shop.risk.decide(e))]
    if behaviour:  # the same users as the first run again: their behaviour-model states are now cached
        runs.append(("engine.decide, users decided before (state cached)", decide))
        # users never decided before, each of whom adds an item to their cart just before deciding (as
        # a checkout follows the cart): the event is ingested, its state refresh (recommend/refresh.py)
        # runs in the background, and the decisions are timed once it is done
        runs.append(("engine.decide, new users who carted just before (state refreshed on ingest)", decide))
    refresh_ms: list[float] = []
    used: set[str] = set()
    for run, (name, fn) in enumerate(runs):
        again = "decided before" in name
        browsed = "carted" in name
        part = 2 if browsed else run % 2
        events = [event(i, name[:3] + ("again" if again else "browse" if browsed else ""), part,
                        first_users[i] if again else None) for i in range(n)]
        if not first_users:
            first_users = [e.user_id for e in events]
        used.update(e.user_id for e in events)
        for e in events[:200]:
            fn(e)  # warm-up
        lat, order_lat = [], []
        for start in range(200, n, 100):
            chunk = events[start:start + 100]
            if browsed:
                t = time.perf_counter()
                computed = shop.refresher.stats["computed"]
                shop.ingest("events", [{"event_id": f"cart-{e.event_id}", "user_id": e.user_id, "type": "add_to_cart",
                                        "item_id": rng.choice(catalog),
                                        "ts": datetime.fromtimestamp((e.ts_ms - 20_000) / 1000, timezone.utc).isoformat()}
                                       for e in chunk],
                            actor="bench")
                if not shop.refresher.wait_idle(60):
                    sys.exit("the background state refresh did not finish in 60 s")
                done = shop.refresher.stats["computed"] - computed
                if done:
                    refresh_ms.append((time.perf_counter() - t) * 1000 / done)
            gc.callbacks.append(pauses)
            for e in chunk:
                t = time.perf_counter()
                fn(e)
                lat.append((time.perf_counter() - t) * 1000)
                if e.kind == "order":
                    order_lat.append(lat[-1])
            gc.callbacks.remove(pauses)
        # orders alone too: only they can need a behaviour-model pass, so runs compare like for like
        results[name] = {**_percentiles(lat), "orders": _percentiles(order_lat), "rules": len(engine.rules),
                         "model": engine.model_version is not None, "behaviour_model": behaviour,
                         "gc_pauses": pauses.summary()}
        pauses.pauses.clear()
        if browsed:
            results[name]["refresh_ms_per_user_median"] = round(statistics.median(refresh_ms), 3)
            results[name]["refresh_stats"] = dict(shop.refresher.stats)
    if behaviour:
        results.update(after_warm_up(shop, users, used, lambda i, user: event(i, "warm", 0, user), decide))
    # the model's share alone, on the same events' feature vectors: path attributions (what a decision
    # carries) against exact TreeSHAP (on demand)
    for name, exact in (("model.explain, path attribution", False), ("model.explain, exact TreeSHAP", True)):
        lat = []
        for row in rows[200:]:
            t = time.perf_counter()
            engine.model.explain(row, exact=exact)
            lat.append((time.perf_counter() - t) * 1000)
        results[name] = _percentiles(lat)
    trees = engine.model.booster_.dump_model()["tree_info"]
    results["gc"] = {"thresholds": list(gc.get_threshold()), "frozen_objects": gc.get_freeze_count(),
                     "tracked_objects": len(gc.get_objects())}
    results["model size"] = {"trees": len(trees), "mean_leaves": round(sum(t["num_leaves"] for t in trees) / len(trees), 1)}
    shop.close()
    return results


def after_warm_up(shop, users: int, used: set[str], make_event, decide) -> dict:
    """As after a restart of `shopmind serve`: its startup warm-up (`Shop.warm_states`: the background
    refresh for users with events in the last `warm_states_days` before the newest event, under the
    refresh's own rules: consent, open cart), run to the end, then orders and payments of users active
    in that window whom no earlier run decided, timed. Users the warm-up passed over (no consent and no
    open cart) are among them, as they would be. The add_to_cart events the run of carting users
    ingested (dated now, while the generated history ends earlier) are deleted first, so that the window
    is the generated history's last days, as after a restart of that shop."""
    with shop.store.transaction() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE event_id LIKE 'cart-%'")
    newest = shop.store.fetch_all("SELECT MAX(ts_ms) FROM events")[0][0]
    active = {p for (p,) in shop.store.fetch_all(
        "SELECT DISTINCT user_pseudonym FROM events WHERE ts_ms >= ? AND user_pseudonym IS NOT NULL",
        (int(newest - shop.settings.warm_states_days * 86_400_000),))}
    candidates = [u for u in (f"u{k:07d}" for k in range(1, users + 1))
                  if u not in used and shop.pseudonym(u) in active]
    wall, cpu = time.perf_counter(), time.process_time()
    queued = shop.warm_states()
    if not shop.refresher.wait_idle(900):
        sys.exit("the startup warm-up did not finish in 900 s")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    events = [make_event(i, u) for i, u in enumerate(candidates)]
    lat = []
    for e in events:
        t = time.perf_counter()
        decide(e)
        lat.append((time.perf_counter() - t) * 1000)
    orders = [ms for e, ms in zip(events, lat) if e.kind == "order"]
    return {"engine.decide, users active in the warm-up window, not decided before, after the warm-up": {
        **_percentiles(lat), "orders": _percentiles(orders), "warm_up": {
            "users_queued": queued, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "window_days": shop.settings.warm_states_days}}}


def _ingest_key(home: Path) -> str:
    """A throw-away ingestion key of the throw-away bench shop, for --browse."""
    from shopmind.auth import Scope, create_key
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    shop = Shop.open(load_settings(home=home, cache_url="memory://"))
    try:
        return create_key(shop.store, "bench browse", frozenset({Scope.ingest}))
    finally:
        shop.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--decisions", type=int, default=5000)
    ap.add_argument("--rates", default="500,1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--home", type=Path, help="build the shop here once and reuse it on later runs")
    ap.add_argument("--http-only", action="store_true", help="skip the in-process measurements")
    ap.add_argument("--no-gc-freeze", action="store_true",
                    help="in process and in the server, leave the shop's startup objects to the cycle collector "
                         "(serve_gc_freeze off), to measure what freezing them changes")
    ap.add_argument("--gc-thresholds", help="in process only: young,middle,old collector thresholds instead of "
                                            "the server's (SERVING_GC_THRESHOLDS), to compare them")
    ap.add_argument("--behaviour", action="store_true",
                    help="train a behaviour model first, so decisions on orders compute its feature")
    ap.add_argument("--train-budget", type=float, default=120, help="with --behaviour: its training budget, seconds")
    ap.add_argument("--browse", action="store_true",
                    help="over HTTP, each order's user adds an item to their cart (POST /v1/events) about 1 s "
                         "of requests before the order")
    args = ap.parse_args()
    thresholds = tuple(int(x) for x in args.gc_thresholds.split(",")) if args.gc_thresholds else None
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        built, with_behaviour = home / "bench-key.txt", home / "bench-behaviour.txt"
        if built.exists():
            if with_behaviour.exists() != args.behaviour:
                sys.exit(f"{home} was built {'with' if with_behaviour.exists() else 'without'} a behaviour model; "
                         f"run {'with' if with_behaviour.exists() else 'without'} --behaviour or use another --home")
            key, n_rules = built.read_text().strip(), 50
        else:
            key, n_rules = build(home, args.users, args.days, args.behaviour, args.train_budget)
            built.write_text(key)  # a throw-away key of a throw-away bench shop
            if args.behaviour:
                with_behaviour.write_text("yes")
        import polars as pl

        catalog = pl.read_parquet(home / "data" / "items.parquet", columns=["item_id"])["item_id"].to_list()
        report = {"rules": n_rules, "behaviour_model": args.behaviour, "http": [],
                  "in_process": {} if args.http_only else in_process(home, args.users, args.decisions, catalog,
                                                                         gc_freeze=not args.no_gc_freeze,
                                                                         gc_thresholds=thresholds)}
        print(json.dumps(report["in_process"], indent=2), flush=True)
        ingest_key = _ingest_key(home) if args.browse else None
        marker = b'"decision"|"written"' if args.browse else b'"decision"'
        report["browse"] = args.browse
        env = {**os.environ, "SHOPMIND_HOME": str(home), "SHOPMIND_CACHE_URL": "memory://", "SHOPMIND_LOG_LEVEL": "WARNING",
               "SHOPMIND_SERVE_GC_FREEZE": "false" if args.no_gc_freeze else "true"}
        report["gc_freeze"] = not args.no_gc_freeze
        with running_server(env) as port:
            # untimed warm-up: the engine is built and the first users' profiles are read on first use
            drive(port, 50, 5, requests(key, 50, 250, args.users, catalog), b'"decision"')
            for rate in [float(r) for r in args.rates.split(",")]:
                report["http"].append(drive(port, rate, args.seconds,
                                            requests(key, rate, int(rate * args.seconds), args.users, catalog,
                                                     ingest_key), marker))
                print(json.dumps(report["http"][-1]), flush=True)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
