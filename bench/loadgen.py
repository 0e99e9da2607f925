"""Open-loop HTTP/1.1 load generator on raw asyncio streams, run in its own process by the HTTP benches.

    python bench/loadgen.py PORT RATE SECONDS REQUESTS.json OK_MARKER

REQUESTS.json is a JSON list of complete raw requests (latin-1 strings, headers and body); request i of
the run is entry i modulo the list's length. Requests are sent on a fixed schedule at RATE per second
over 64 keep-alive connections, whatever the server's speed, and each latency is measured from the
request's scheduled send time, so queueing shows up in the figures (no coordinated omission). A
response counts as good when its status is 200 and its body contains OK_MARKER. Prints one JSON line:
target and achieved rate, p50 and p99 in ms, errors. OK_MARKER may list alternatives separated by
"|" (a mix of routes); then each alternative's good responses also get their own count, p50 and p99. Raw streams because httpx's async client alone
needed most of a core at 100 requests/s here, which would have been taken from the server measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

CONNECTIONS = 64


def raw_post(path: str, key: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 POST of a JSON body with an API key, as REQUESTS.json entries are."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _exchange(conn, raw: bytes) -> tuple[int, bytes]:
    reader, writer = conn
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return int(head[9:12]), await reader.readexactly(length)


async def run(port: int, rate: float, seconds: float, requests: list[bytes], marker: bytes) -> dict:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    markers = marker.split(b"|")
    by_marker: dict[bytes, list[float]] = {m: [] for m in markers}
    errors = 0
    n = int(rate * seconds)
    start = time.perf_counter() + 0.2

    async def one(i: int) -> None:
        nonlocal errors
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = await pool.get()  # waiting for a free connection counts in the latency
        try:
            status, body = await asyncio.wait_for(_exchange(conn, requests[i % len(requests)]), 10)
            matched = next((m for m in markers if m in body), None)
            ok = status == 200 and matched is not None
        except Exception:
            ok = False
            conn[1].close()
            conn = await asyncio.open_connection("127.0.0.1", port)
        pool.put_nowait(conn)
        if ok:
            latencies.append(time.perf_counter() - due)
            by_marker[matched].append(latencies[-1])
        else:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    latencies.sort()

    def q(values: list[float], p: float) -> float | None:
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2) if values else None

    report = {"target_rps": rate, "achieved_rps": round(len(latencies) / wall, 1), "p50_ms": q(latencies, 0.5),
              "p99_ms": q(latencies, 0.99), "errors": errors, "requests": n}
    if len(markers) > 1:
        report["by_marker"] = {m.decode(): {"n": len(v), "p50_ms": q(sorted(v), 0.5), "p99_ms": q(sorted(v), 0.99)}
                               for m, v in by_marker.items()}
    return report


def drive(port: int, rate: float, seconds: float, requests: list[bytes], marker: bytes) -> dict:
    """Run this generator in a child process (so it does not share the caller's interpreter)."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        json.dump([r.decode("latin-1") for r in requests], fh)
        fh.flush()
        out = subprocess.run([sys.executable, __file__, str(port), str(rate), str(seconds), fh.name,
                              marker.decode()], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    port, rate, seconds, path, marker = sys.argv[1:6]
    with open(path) as fh:
        requests = [r.encode("latin-1") for r in json.load(fh)]
    print(json.dumps(asyncio.run(run(int(port), float(rate), float(seconds), requests, marker.encode()))))


if __name__ == "__main__":
    main()
