"""Killing the server with SIGKILL while clients send loses no acknowledged event, and no batch is
half-written. Resending the unacknowledged batches afterwards gives exactly every event once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from shopmind.auth import Scope, create_key
from shopmind.storage import schema
from tests.conftest import make_shop

BATCH = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "shopmind.cli.main", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def _batch(n: int) -> list[dict]:
    return [{"event_id": f"b{n}-e{i}", "user_id": f"user-{(n * BATCH + i) % 97}", "type": "view",
             "item_id": f"item-{i % 31}", "ts": "2026-02-01T12:00:00Z"} for i in range(BATCH)]


def test_sigkill_loses_no_acknowledged_event(tmp_path: Path, database_url: str):
    home = tmp_path / "home"
    shop = make_shop(home, database_url)
    key = create_key(shop.store, "crash-test", frozenset({Scope.ingest}))
    shop.close()
    env = {**os.environ, "SHOPMIND_HOME": str(home), "SHOPMIND_DATABASE_URL": database_url,
           "PYTHONPATH": str(Path(__file__).parents[1])}
    port = _free_port()
    server = _start_server(env, port)

    acked: set[int] = set()
    sent: set[int] = set()
    counter = iter(range(10**9))
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=10) as http:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                    sent.add(n)
                try:
                    r = http.post("/v1/events", json=_batch(n))
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acked.add(n)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)  # mid-flight: the clients are still sending
    server.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 15, "the server acknowledged too few batches before the kill to test anything"

    reopened = make_shop(home, database_url)
    with reopened.store.transaction() as conn:
        stored = {eid for (eid,) in conn.execute(select(schema.events.c.event_id))}
    per_batch = {n: sum(f"b{n}-e{i}" in stored for i in range(BATCH)) for n in sent}
    lost = [n for n in acked if per_batch[n] != BATCH]
    assert not lost, f"acknowledged batches lost or partial: {lost}"
    torn = [n for n, count in per_batch.items() if count not in (0, BATCH)]
    assert not torn, f"half-written batches: {torn}"
    reopened.close()

    # The clients resend what was never acknowledged: afterwards every event is there exactly once.
    server = _start_server(env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30) as http:
            for n in sorted(sent - acked):
                assert http.post("/v1/events", json=_batch(n)).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    final = make_shop(home, database_url)
    assert final.store.count("events") == len(sent) * BATCH
    final.close()
