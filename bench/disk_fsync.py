"""How long one fsync takes on the disk that holds the decision log: the floor under a durable decision.

    .venv/bin/python bench/disk_fsync.py [--dir DIR] [--n 1500] [--interval-ms 4]

Appends 8 KiB and fsyncs, --n times, one every --interval-ms (a group commit's write, at the pace of
a lightly loaded service), in a file under --dir (default: a temporary directory on the disk of this
checkout) and prints the latency percentiles in milliseconds. Every acknowledged risk decision waits
for one such fsync (shared by the decisions of one group commit), so its tail is the tail of every
decision's latency, whatever the CPU does.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(directory: Path, n: int, interval_s: float) -> dict[str, float]:
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    latencies = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 8192)
            started = time.perf_counter()
            os.fsync(fd)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(interval_s)
    finally:
        os.close(fd)
        path.unlink()
    latencies.sort()

    def at(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    return {"n": n, "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "p99.9_ms": at(0.999),
            "max_ms": round(latencies[-1], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--interval-ms", type=float, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir or ROOT) as tmp:
        print(json.dumps(measure(Path(tmp), args.n, args.interval_ms / 1000)))


if __name__ == "__main__":
    main()
