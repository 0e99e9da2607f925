"""Ingestion throughput: events/s through `shopmind import` and through POST /v1/events,
on SQLite and on PostgreSQL, with events from the synthetic shop.

    .venv/bin/python bench/ingest_throughput.py [--events 200000] [--repeats 3] [--backends sqlite,postgres]
        [--format parquet|csv|jsonl] [--paths cli,process,http]

Each figure is the median of --repeats runs into a fresh database. The import figure is the wall time
of the real CLI command (`shopmind import events.parquet`, process start included) and, separately, of
the import itself inside the process; the CLI row also gives the command's peak memory (max RSS).
`--format` picks the file the imports read (the HTTP load is the same in every format). The HTTP figure comes from a load generator in a separate
process (threads sending pre-encoded 1,000-event batches, so the client spends little CPU) against
`shopmind serve`; an event counts when its batch was acknowledged (committed) with HTTP 200.
Results go to stdout as a Markdown table and to bench/out/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server import running_server  # noqa: E402  (bench/server.py; bench/ is on sys.path when run as a script)

PG_URL = os.environ.get("SHOPMIND_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BATCH = 1000


def events_file(n_events: int, directory: Path, fmt: str = "parquet") -> Path:
    """The first n events of a generated shop, as Parquet (the shop's export format), CSV or JSONL."""
    from shopmind.synth import ShopConfig, generate_shop

    users = 5000
    while True:
        shop = generate_shop(ShopConfig(n_users=users, days=60, seed=7))
        if shop.events.height >= n_events or users >= 200_000:
            break
        users *= 2
    events = shop.events.head(n_events).drop("converted", strict=False)
    path = directory / f"events.{fmt}"
    if fmt == "parquet":
        events.write_parquet(path)
    else:
        import polars as pl

        text = events.with_columns(pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ"))
        text.write_csv(path) if fmt == "csv" else text.write_ndjson(path)
    return path


def fresh_database(backend: str, directory: Path) -> tuple[str, callable]:
    if backend == "sqlite":
        path = directory / f"{uuid.uuid4().hex}.db"
        return f"sqlite:///{path}", lambda: None
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    plain = PG_URL.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")

    return f"{PG_URL}?options=-csearch_path%3D{name}", drop


def prepare(home: Path, url: str) -> str:
    from shopmind.auth import Scope, create_key
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    shop, _ = Shop.init(load_settings(home=home, database_url=url))
    key = create_key(shop.store, "bench", frozenset({Scope.ingest}))
    shop.close()
    return key


def env_for(home: Path, url: str) -> dict[str, str]:
    return {**os.environ, "SHOPMIND_HOME": str(home), "SHOPMIND_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}


# The CLI, run so that its peak memory is known: the command's own high-water resident set (VmHWM, kB),
# printed last. Not getrusage's ru_maxrss: Linux carries that over exec from the forked copy of this
# process, so it grew with the shop this script had generated, not with the import.
CLI_WITH_PEAK = ("import runpy, sys\n"
                 "try:\n    runpy.run_module('shopmind.cli.main', run_name='__main__')\n"
                 "finally:\n    print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')),"
                 " file=sys.stderr)\n")


def bench_import_cli(path: Path, n: int, home: Path, url: str) -> tuple[float, float]:
    """(events/s, peak MB) of the whole `shopmind import` command."""
    prepare(home, url)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI_WITH_PEAK, "import", str(path), "--kind", "events"],
                          env=env_for(home, url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    return n / seconds, int(done.stderr.split()[-1]) / 1024


def bench_import_api(path: Path, n: int, home: Path, url: str) -> float:
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    prepare(home, url)
    shop = Shop.open(load_settings(home=home, database_url=url))
    started = time.perf_counter()
    result = shop.import_file(path, "events", actor="bench")
    elapsed = time.perf_counter() - started
    assert result.written == n, result
    shop.close()
    return n / elapsed


LOADGEN = r"""
import json, sys, threading, time, httpx
port, key, bodies_file, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
bodies = [b.encode() for b in open(bodies_file).read().split("\n") if b]
todo = list(range(len(bodies)))
lock = threading.Lock()
acked = [0]
failures = [0]
def worker():
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                      headers={"X-API-Key": key, "Content-Type": "application/json"}) as http:
        while True:
            with lock:
                if not todo: return
                i = todo.pop()
            r = http.post("/v1/events", content=bodies[i])
            with lock:
                if r.status_code == 200: acked[0] += r.json()["written"]
                else: failures[0] += 1
started = time.perf_counter()
ts = [threading.Thread(target=worker) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"seconds": time.perf_counter() - started, "written": acked[0], "failures": failures[0]}))
"""


def bench_http(path: Path, n: int, home: Path, url: str, workdir: Path) -> float:
    import polars as pl

    key = prepare(home, url)
    frame = pl.read_parquet(path.with_suffix(".parquet")).with_columns(pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ"))
    bodies = workdir / "bodies.jsonl"
    with open(bodies, "w") as fh:
        for part in frame.iter_slices(BATCH):
            rows = [{k: v for k, v in r.items() if v is not None} for r in part.to_dicts()]
            fh.write(json.dumps(rows) + "\n")
    with running_server(env_for(home, url)) as port:
        out = subprocess.run([sys.executable, "-c", LOADGEN, str(port), key, str(bodies), "4"],
                             check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert result["failures"] == 0 and result["written"] == n, result
    return n / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet",
                        help="the file the imports read")
    parser.add_argument("--paths", default="cli,process,http", help="which of the three paths to measure")
    args = parser.parse_args()
    paths = set(args.paths.split(","))

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = events_file(args.events, tmp, args.format)
        if args.format != "parquet" and "http" in paths:
            events_file(args.events, tmp)  # what the HTTP load is encoded from
        for backend in args.backends.split(","):
            for short, name, fn in (("cli", "import (CLI, whole command)", bench_import_cli),
                                    ("process", "import (in process)", bench_import_api),
                                    ("http", "HTTP POST /v1/events", None)):
                if short not in paths:
                    continue
                runs, peaks = [], []
                for _ in range(args.repeats):
                    url, drop = fresh_database(backend, tmp)
                    home = tmp / uuid.uuid4().hex
                    try:
                        if fn is None:
                            runs.append(bench_http(path, args.events, home, url, tmp))
                        elif fn is bench_import_cli:
                            rate, peak = fn(path, args.events, home, url)
                            runs.append(rate)
                            peaks.append(peak)
                        else:
                            runs.append(fn(path, args.events, home, url))
                    finally:
                        drop()
                results.append({"backend": backend, "path": name, "format": args.format, "events": args.events,
                                "events_per_s_median": round(statistics.median(runs)),
                                "runs": [round(r) for r in runs],
                                "peak_mb_median": round(statistics.median(peaks)) if peaks else None})
                print(json.dumps(results[-1]), flush=True)

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\n{machine}\n")
    print("| backend | path | file | events | events/s (median) | runs | peak MB (median) |")
    print("|---|---|---|---:|---:|---|---:|")
    for r in results:
        print(f"| {r['backend']} | {r['path']} | {r['format']} | {r['events']:,} | {r['events_per_s_median']:,} | "
              f"{', '.join(f'{x:,}' for x in r['runs'])} | {r['peak_mb_median'] or ''} |")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"ingest{'' if args.format == 'parquet' else '_' + args.format}.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
