"""Open-loop HTTP/1.1 load generator on raw asyncio streams, run in its own process by the HTTP benches.

    python bench/loadgen.py PORT RATE SECONDS REQUESTS.json OK_MARKER

REQUESTS.json is a JSON list of complete raw requests (latin-1 strings, headers and body); request i of
the run is entry i modulo the list's length. Requests are sent on a fixed schedule at RATE per second
over 64 keep-alive connections, whatever the server's speed, and each latency is measured from the
request's scheduled send time, so queueing shows up in the figures (no coordinated omission). A
response counts as good when its status is 200 and its body contains OK_MARKER. Prints one JSON line:
target and achieved rate, p50 and p99 in ms of the good responses, errors (with a p99 that counts them
at their duration when there are any), and the p99 of how late the generator sent requests (above a
millisecond or two, the generator, not the server, was the limit). OK_MARKER may list alternatives separated by
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
    failed: list[float] = []  # how long each failed request took (a timeout: its 10 s)
    markers = marker.split(b"|")
    by_marker: dict[bytes, list[float]] = {m: [] for m in markers}
    n = int(rate * seconds)
    start = time.perf_counter() + 0.2
    last_good = start

    async def one(i: int, due: float) -> None:
        nonlocal last_good
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
        done = time.perf_counter()
        if ok:
            latencies.append(done - due)
            by_marker[matched].append(latencies[-1])
            last_good = max(last_good, done)
        else:
            failed.append(done - due)

    # Each request is started when it falls due (made all at once, 24,000 tasks took longer to start
    # than the lead, and the first requests went out up to 0.2 s late, counted as the server's latency);
    # how late the generator itself sent them is reported, so a run it could not keep up with shows.
    tasks, late = [], []
    for i in range(n):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        late.append(time.perf_counter() - due)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    # achieved: good answers over the schedule, or until the last good answer if later (a request that
    # hung to its timeout does not stretch it)
    wall = max(seconds, last_good - start)
    latencies.sort()
    late.sort()

    def q(values: list[float], p: float) -> float | None:
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2) if values else None

    report = {"target_rps": rate, "achieved_rps": round(len(latencies) / wall, 1), "p50_ms": q(latencies, 0.5),
              "p99_ms": q(latencies, 0.99), "errors": len(failed), "requests": n,
              "sent_late_p99_ms": q(late, 0.99)}
    if failed:  # the good answers' p99 leaves the failures out; this one counts them at their duration
        report["p99_ms_all_requests"] = q(sorted(latencies + failed), 0.99)
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
