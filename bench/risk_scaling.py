"""Does a second API process raise the risk route's throughput on this machine? Where does the CPU go?

    .venv/bin/python bench/risk_scaling.py [--rates 500,1000,1500,2000] [--seconds 6]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

`shopmind serve --workers N` needs the velocity windows in Redis (each process would otherwise count
only its own share of a card's events), so a second process buys a core at the price of a network
round trip and Lua work per decision. This runs the empty-shop decision route of bench/http_ceiling.py
(no rules, no model: key check, validation, five entities' velocity windows, the committed decision log,
the answer) under each configuration, one at a time, each on a fresh shop and an empty Redis database:

  1. one process, in-process velocity, SQLite (the default);
  2. one process, Redis velocity, SQLite;
  3. two processes, Redis velocity, SQLite (two writers share SQLite's one write lock);
  4. two processes, Redis velocity, PostgreSQL (only with --postgres: a server URL whose role may
     create and drop the database `shopmind_risk_scaling`).

Besides rate and latency (the open-loop generator of bench/loadgen.py, in its own process on the same
cores), it reports the CPU each party used per answered decision, from /proc: the server processes,
redis-server, PostgreSQL's processes and the load generator. Their sum against the machine's two cores
says how far a configuration is from what the cores allow. Linux only. Redis must run (the URL below).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from http_ceiling import _decisions  # noqa: E402  (bench/http_ceiling.py)
from loadgen import drive  # noqa: E402
from server import process_tree_cpu_s, running_server_process  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/13"
PG_DATABASE = "shopmind_risk_scaling"


def _postgres_cpu_s() -> float:
    """CPU seconds of every live process named postgres (its backends and background workers)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        name, fields = raw[raw.index("(") + 1:raw.rindex(")")], raw.rsplit(")", 1)[1].split()
        if name.startswith("postgres"):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _recreate_database(server_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {PG_DATABASE}"))
    admin.dispose()
    return make_url(server_url).set(database=PG_DATABASE).render_as_string(hide_password=False)


def run_config(name: str, workers: int, cache_url: str, database_url: str | None, rates: list[float],
               seconds: float, tmp: Path, tag: str) -> list[dict]:
    import redis

    from shopmind.auth import Scope, create_key
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    home = tmp / tag
    extra = {"database_url": database_url} if database_url else {}
    shop, _ = Shop.init(load_settings(home=home, cache_url="memory://", **extra))
    key = create_key(shop.store, "bench", frozenset({Scope.risk}))
    shop.close()
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    redis_pid = int(r.info("server")["process_id"])
    env = {**os.environ, "SHOPMIND_HOME": str(home), "SHOPMIND_CACHE_URL": cache_url,
           "SHOPMIND_WORKERS": str(workers), "SHOPMIND_LOG_LEVEL": "WARNING"}
    if database_url:
        env["SHOPMIND_DATABASE_URL"] = database_url
    rows = []
    with running_server_process(env) as (port, pid):
        drive(port, 100, 2, _decisions(key, 200, f"{tag}-warm"), b'"decision"')
        for rate in rates:
            requests = _decisions(key, int(rate * seconds), f"{tag}-{rate:.0f}")
            before = (process_tree_cpu_s(pid), process_tree_cpu_s(redis_pid), _postgres_cpu_s(),
                      resource.getrusage(resource.RUSAGE_CHILDREN))
            row = drive(port, rate, seconds, requests, b'"decision"')
            after = (process_tree_cpu_s(pid), process_tree_cpu_s(redis_pid), _postgres_cpu_s(),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
            # every answer the generator waited for, the late ones too: the CPU was measured over all of them
            # (achieved_rps * seconds undercounts once the server falls behind and the run overruns)
            answered = max(row["requests"] - row["errors"], 1)
            loadgen = (after[3].ru_utime + after[3].ru_stime) - (before[3].ru_utime + before[3].ru_stime)
            row.update(config=name, server_us=(after[0] - before[0]) / answered * 1e6,
                       redis_us=(after[1] - before[1]) / answered * 1e6,
                       postgres_us=(after[2] - before[2]) / answered * 1e6 if database_url else 0.0,
                       loadgen_us=loadgen / answered * 1e6)
            row["total_us"] = row["server_us"] + row["redis_us"] + row["postgres_us"] + row["loadgen_us"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,1500,2000")
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--postgres", help="a PostgreSQL server URL for configuration 4")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    configs = [("1 process, in-process velocity, SQLite", 1, "memory://", None),
               ("1 process, Redis velocity, SQLite", 1, REDIS_URL, None),
               ("2 processes, Redis velocity, SQLite", 2, REDIS_URL, None)]
    if args.postgres:
        configs.append(("2 processes, Redis velocity, PostgreSQL", 2, REDIS_URL, _recreate_database(args.postgres)))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, workers, cache, db) in enumerate(configs):
            results += run_config(name, workers, cache, db, rates, args.seconds, Path(tmp), f"c{i}")
    print("\n| configuration | offered /s | achieved /s | p50 ms | p99 ms | errors | CPU us per decision: "
          "server | Redis | PostgreSQL | load generator | sum |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    last = None
    for row in results:
        name = row["config"] if row["config"] != last else ""
        last = row["config"]
        print(f"| {name} | {row['target_rps']:.0f} | {row['achieved_rps']:.0f} | {row['p50_ms']} | {row['p99_ms']} | "
              f"{row['errors']} | {row['server_us']:.0f} | {row['redis_us']:.0f} | {row['postgres_us']:.0f} | "
              f"{row['loadgen_us']:.0f} | {row['total_us']:.0f} |")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "risk_scaling.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
