"""Soak: many clients for a while through backend faults, on loopback; bounded in time and count.

    python bench/soak.py [--clients 128] [--seconds 60] [--procs 4]

Three stub backends (each its own process, so it can be killed) behind one ``tierwise serve``;
``--procs`` client processes run ``--clients`` concurrent clients in all (half streaming; routed
``tierwise`` and direct names), while a schedule breaks the backends: HTTP 500s, a model that
never answers, a killed model, restarts. At the end the gateway is stopped (SIGTERM flushes its log)
and the decision log is checked against what the clients saw: every 200 a client got is one row.

Reported: client-visible errors (the bar: 0), status counts, throughput and latency, rows vs 200s.
The clients are Python (aiohttp); on 2 cores they share the CPU with the gateway, so throughput
here is limited by the machine and the load generator, not a gateway figure (see bench/gateway_bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from tierwise.testing import free_port, start_gateway, stop_gateway  # noqa: E402

# A stub whose every answer follows one forced mode (argv[2]; "" = by model field), so a restart
# with another mode turns a healthy model into a failing or stalling one.
_STUB = """
import sys, time
from tierwise.testing import StubBackend
class Forced(StubBackend):
    async def _answer(self, body, entry, writer):
        if sys.argv[2]:
            body = {**body, "model": sys.argv[2]}
        return await super()._answer(body, entry, writer)
s = Forced(port=int(sys.argv[1])).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""

# (second, model index, action): start healthy / fail (500s) / stall / kill
SCHEDULE = [(0.15, 1, "fail"), (0.30, 1, "stall"), (0.45, 1, "echo"), (0.45, 2, "kill"), (0.60, 2, "echo"),
            (0.60, 0, "kill"), (0.75, 0, "echo")]


class Stubs:
    def __init__(self, n: int):
        self.ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def set(self, i: int, mode: str) -> None:
        self.kill(i)
        if mode == "kill":
            return
        p = subprocess.Popen([sys.executable, "-c", _STUB, str(self.ports[i]), "" if mode == "echo" else mode],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout.readline().strip() == "ready"
        self.procs[i] = p

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.kill()
            p.wait(10)
        self.procs[i] = None

    def close(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)


def _pyramid(path: Path, ports: list[int], log: Path) -> Path:
    lines = ["models:"]
    for i, port in enumerate(ports):
        lines += [f"  - name: m{i}", "    backend: openai", f"    endpoint: http://127.0.0.1:{port}/v1",
                  "    model: echo", f"    input_per_1m: {0.1 * 10 ** i:g}", f"    output_per_1m: {0.2 * 10 ** i:g}",
                  "    context_window: 8192", "    timeout_s: 1", "    max_concurrency: 256",
                  "    breaker_failures: 3", "    breaker_cooldown_s: 2"]
    lines.append(f"log: {log}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _client_proc(url: str, clients: int, seconds: float, seed: int, out: "mp.Queue") -> None:
    import random

    import aiohttp

    async def main() -> dict:
        rnd = random.Random(seed)
        stats = {"status": {}, "errors": [], "latency_ms": [], "ok": 0}
        deadline = time.monotonic() + seconds

        async def one(session: aiohttp.ClientSession, k: int) -> None:
            while time.monotonic() < deadline:
                stream = rnd.random() < 0.5
                model = rnd.choice(["tierwise"] * 7 + ["m0", "m2"] * 2 + ["tierwise:0.2"])
                body = {"model": model, "messages": [{"role": "user", "content": f"soak {k} {rnd.random()}"}],
                        "stream": stream}
                t = time.perf_counter()
                try:
                    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as r:
                        raw = await r.read()
                        key = str(r.status)
                        if r.status == 200 and stream and (b'"error"' in raw or not raw.rstrip().endswith(b"[DONE]")):
                            key = "200-broken-stream"
                        stats["status"][key] = stats["status"].get(key, 0) + 1
                        if key == "200":
                            stats["ok"] += 1
                        else:
                            stats["errors"].append(f"{key}: {raw[:160]!r}")
                except Exception as exc:
                    stats["status"]["exception"] = stats["status"].get("exception", 0) + 1
                    stats["errors"].append(f"{type(exc).__name__}: {exc}")
                stats["latency_ms"].append((time.perf_counter() - t) * 1000)

        conn = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=conn) as session:
            await asyncio.gather(*(one(session, k) for k in range(clients)))
        return stats

    out.put(asyncio.run(main()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--procs", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tierwise-soak-"))
    stubs = Stubs(3)
    for i in range(3):
        stubs.set(i, "echo")
    log = tmp / "log.sqlite"
    port = free_port()
    gw = start_gateway(_pyramid(tmp / "pyramid.yaml", stubs.ports, log), port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    q: mp.Queue = mp.Queue()
    per = max(1, args.clients // args.procs)
    procs = [mp.Process(target=_client_proc, args=(url, per, args.seconds, s, q)) for s in range(args.procs)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    events = []
    try:
        for frac, i, action in SCHEDULE:
            wait = t0 + frac * args.seconds - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            stubs.set(i, action)
            events.append(f"{time.monotonic() - t0:5.1f}s m{i} -> {action}")
        results = [q.get(timeout=args.seconds + 120) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        elapsed = time.monotonic() - t0
        gw_out = stop_gateway(gw)
        stubs.close()
    status: dict[str, int] = {}
    lat: list[float] = []
    errors: list[str] = []
    for r in results:
        for k, v in r["status"].items():
            status[k] = status.get(k, 0) + v
        lat += r["latency_ms"]
        errors += r["errors"]
    ok = status.get("200", 0)
    import sqlite3

    with sqlite3.connect(log) as con:
        rows = dict(con.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())
        fallbacks = con.execute("SELECT COUNT(*) FROM requests WHERE fallbacks != '[]'").fetchone()[0]
    lat.sort()
    total = sum(status.values())
    print(f"soak: {args.clients} clients ({args.procs} processes) for {elapsed:.0f} s through backend faults")
    print("faults: " + "; ".join(events))
    print(f"requests {total} ({total / elapsed:.0f} req/s), statuses {json.dumps(status, sort_keys=True)}")
    print(f"client-visible errors: {total - ok}")
    if lat:
        print(f"latency p50 {lat[len(lat) // 2]:.1f} ms  p99 {lat[int(len(lat) * 0.99)]:.1f} ms  "
              f"max {lat[-1]:.0f} ms")
    print(f"decision log: {sum(rows.values())} rows, status counts {json.dumps(rows, sort_keys=True)}, "
          f"{fallbacks} with fallbacks; 200 rows {rows.get(200, 0)} vs 200s seen by clients {ok}: "
          f"{'OK' if rows.get(200, 0) == ok else 'MISMATCH'}")
    for e in errors[:5]:
        print("  error:", e)
    if "Traceback" in gw_out:
        print("gateway printed a traceback:\n" + gw_out[-3000:])


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
