"""`shopmind serve` in a child process for HTTP benchmarks: a free port, wait until it answers, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(env: dict[str, str]) -> Iterator[int]:
    """Start the server with `env`, yield its port once it answers, terminate it afterwards. The
    server's startup warm-up of recently active users' states is off unless `env` sets
    SHOPMIND_WARM_STATES_DAYS."""
    with running_server_process(env) as (port, _pid):
        yield port


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a live process and its live descendants (uvicorn's
    worker processes), from /proc: Linux only."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended between the listing and the read
    return total


@contextmanager
def running_server_process(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """`running_server` that also yields the server's process id."""
    import httpx

    port = free_port()
    # The startup warm-up (Shop.warm_states) would run beside the timed load and turn the benchmarks'
    # first visits and first orders into cached ones; off unless the caller sets it.
    env = {"SHOPMIND_WARM_STATES_DAYS": "0", **env}
    server = subprocess.Popen([sys.executable, "-m", "shopmind.cli.main", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("shopmind serve did not answer within 30 s")
        yield port, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)
