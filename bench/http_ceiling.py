"""What one server process can answer over HTTP on this machine, from nothing up to shopmind's routes.

    .venv/bin/python bench/http_ceiling.py [--rates 1000,2000,3000] [--seconds 8]

The same open-loop load generator as the other HTTP benchmarks (bench/loadgen.py: raw asyncio streams,
64 keep-alive connections, latency from each request's scheduled send time), in its own process on the
same two cores, against one server process at a time:

  1. a raw uvloop protocol that answers every request with a fixed 200 (no HTTP library, no ASGI);
  2. uvicorn (httptools, uvloop) with a bare ASGI app that answers a fixed 200;
  3. `shopmind serve`: GET /healthz (API-key check, FastAPI routing, Pydantic response);
  4. `shopmind serve`: POST /v1/risk/decisions on an empty shop (no rules, no model, no history: key
     check, event validation, velocity windows, the committed decision log, the answer).

Rows 1-2 are the floor the server framework and the machine put under every route; rows 3-4 show what
shopmind's stack adds before any model runs. The risk route with 50 rules and a real model is
bench/risk_latency.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen import drive, raw_post  # noqa: E402  (bench/loadgen.py)
from server import free_port, running_server  # noqa: E402

RAW_SERVER = '''
import asyncio, sys, uvloop
BODY = b'{"status":"ok"}'
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(BODY) + BODY

class Fixed(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\\r\\n\\r\\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(RESPONSE)

async def main():
    server = await asyncio.get_running_loop().create_server(Fixed, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()

uvloop.install()
asyncio.run(main())
'''

BARE_ASGI = '''
BODY = b'{"status":"ok"}'

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
'''


def _wait(port: int) -> None:
    import socket

    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def _child(cmd: list[str], port: int, rates: list[float], seconds: float, request: bytes, marker: bytes) -> list[dict]:
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port)
        drive(port, 100, 2, [request], marker)  # warm-up
        return [drive(port, rate, seconds, [request], marker) for rate in rates]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _decisions(key: str, n: int, tag: str) -> list[bytes]:
    """n decisions with event ids no other run uses: a repeated id would be answered from the retry cache."""
    out = []
    for i in range(n):
        body = json.dumps({"event_id": f"{tag}-{i}", "kind": "payment" if i % 3 else "order", "user_id": f"u{i % 5000}",
                           "amount": 20.0 + i % 300, "card": f"card-{i % 5000}", "device_id": f"dev-{i % 3000}",
                           "ip": f"10.0.{i % 12}.{i % 250}", "ip_country": "DE", "shipping_country": "DE"}).encode()
        out.append(raw_post("/v1/risk/decisions", key, body))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=8)
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    get = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw, bare = Path(tmp) / "raw_server.py", Path(tmp) / "bare_asgi.py"
        raw.write_text(RAW_SERVER)
        bare.write_text(BARE_ASGI)
        port = free_port()
        results["raw uvloop protocol"] = _child([sys.executable, str(raw), str(port)], port, rates, args.seconds,
                                                get, b"ok")
        port = free_port()
        results["uvicorn + bare ASGI app"] = _child(
            [sys.executable, "-m", "uvicorn", "--app-dir", tmp, "bare_asgi:app", "--port", str(port),
             "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"],
            port, rates, args.seconds, get, b"ok")

        from shopmind.auth import Scope, create_key
        from shopmind.config import load_settings
        from shopmind.shop import Shop

        home = Path(tmp) / "home"
        shop, _ = Shop.init(load_settings(home=home, cache_url="memory://"))
        key = create_key(shop.store, "bench", frozenset({Scope.risk}))
        shop.close()
        env = {**os.environ, "SHOPMIND_HOME": str(home), "SHOPMIND_CACHE_URL": "memory://",
               "SHOPMIND_LOG_LEVEL": "WARNING"}
        health = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n".encode()
        with running_server(env) as port:
            drive(port, 100, 2, [health], b"ok")
            results["shopmind GET /healthz"] = [drive(port, r, args.seconds, [health], b"ok") for r in rates]
            drive(port, 100, 2, _decisions(key, 200, "warm"), b'"decision"')
            results["shopmind POST /v1/risk/decisions, empty shop"] = [
                drive(port, r, args.seconds, _decisions(key, int(r * args.seconds), f"r{r:.0f}"), b'"decision"')
                for r in rates]
    print("| server | offered req/s | achieved req/s | p50 ms | p99 ms | errors | sent late, p99 ms |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for i, row in enumerate(rows):
            print(f"| {name if i == 0 else ''} | {row['target_rps']:.0f} | {row['achieved_rps']:.0f} | "
                  f"{row['p50_ms']} | {row['p99_ms']} | {row['errors']} | {row['sent_late_p99_ms']} |")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "http_ceiling.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
