"""Throughput with 1 vs 2 workers, the decision log's cost, RSS over many requests, and the latency
of the shared per-key checks (Redis), measured with wrk (a C load generator, not the bottleneck).

    python bench/workers_bench.py [--seconds 10] [--connections 32] [--rss-requests 1000000]

The stub backend runs in its own process. Everything shares this machine's cores (wrk, the stub,
the gateway workers), so "2 workers" competes with the load generator for the second core; the
figures say what this machine does, and the report prints the core count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
import _wrk as _load  # noqa: E402
from tierwise.testing import free_port, stop_gateway  # noqa: E402

_STUB = ("import time\nfrom tierwise.testing import StubBackend\nimport sys\n"
         "s = StubBackend(port=int(sys.argv[1])).start()\nprint('ready', flush=True)\n"
         "while True: time.sleep(3600)\n")
def _start_stub(env):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", _STUB, str(port)], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p, port


def _pyramid(tmp: Path, stub_port: int, log: str, extra: str = "") -> Path:
    lines = ["models:"]
    for i in range(3):
        lines += [f"  - name: m{i}", "    backend: openai", f"    endpoint: http://127.0.0.1:{stub_port}/v1",
                  "    model: echo", f"    input_per_1m: {0.1 * 10 ** i:g}", f"    output_per_1m: {0.2 * 10 ** i:g}",
                  "    context_window: 8192", "    timeout_s: 10", "    max_concurrency: 256"]
    cfg = tmp / f"pyramid-{time.monotonic_ns()}.yaml"
    cfg.write_text("\n".join(lines) + f"\nlog: {log}\n" + extra)
    return cfg


def _serve(cfg: Path, workers: int, env) -> tuple[subprocess.Popen, int]:
    import httpx

    port = free_port()
    out = open(cfg.with_suffix(".out"), "w")  # a file, not a pipe nobody reads (a full pipe blocks the gateway)
    p = subprocess.Popen([sys.executable, "-c", "from tierwise.cli import main; main()", "serve", "--config", str(cfg),
                          "--port", str(port), "--workers", str(workers)], env=env, stdout=out,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return p, port
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_gateway(p)
    raise SystemExit("gateway did not start:\n" + cfg.with_suffix(".out").read_text()[-4000:])


def _wrk(port: int, model: str, seconds: float, conns: int, tmp: Path, key: str | None = None) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}]}
    return _load.run(f"http://127.0.0.1:{port}/v1/chat/completions", _load.script(tmp, [body], key), seconds, conns)


def _rss_kb(pid: int) -> int:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _quota_latency(redis_url: str, n: int = 2000) -> dict[str, tuple[float, float]]:
    """p50/p99 ms of the shared checks a limited key adds: what the request waits for (the budget
    read before routing + the admission after planning) and the settlement (run in the background,
    after the answer is sent)."""
    import asyncio

    from tierwise.quota import KeyPolicy, Quota
    from tierwise.quota.redis_state import RedisState

    def pct(xs):
        xs = sorted(xs)
        return statistics.median(xs), xs[int(len(xs) * 0.99)]

    async def go():
        q = Quota({"k": KeyPolicy(usd_per_day=1e9, requests_per_min=10 ** 9, tokens_per_min=10 ** 12)},
                  RedisState(redis_url, prefix=f"bench{time.monotonic_ns()}:"))
        waited, settled = [], []
        for _ in range(n):
            t = time.perf_counter()
            await q.used("k")
            ticket = await q.admit("k", 0.001, 20)
            t1 = time.perf_counter()
            await q.settle(ticket, 0.0005, 10)
            waited.append((t1 - t) * 1000)
            settled.append((time.perf_counter() - t1) * 1000)
        await q.aclose()
        return {"path": pct(waited), "settle": pct(settled)}

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rss-requests", type=int, default=1_000_000)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    tmp = Path(tempfile.mkdtemp(prefix="tierwise-workers-"))
    stub, stub_port = _start_stub(env)
    lines = [f"machine: {os.cpu_count()} cores; wrk -t2 -c{args.connections} -d{args.seconds:g}s, stub backend in "
             "its own process"]
    try:
        results = {}
        for workers in (1, 2):
            for what, model in (("by name", "m0"), ("routed", "tierwise")):
                gw, port = _serve(_pyramid(tmp, stub_port, str(tmp / f"log-{workers}.sqlite")), workers, env)
                try:
                    results[(workers, what)] = r = _wrk(port, model, args.seconds, args.connections, tmp)
                finally:
                    stop_gateway(gw)
                lines.append(f"{workers} worker(s), {what:8s}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                             f"non-2xx {r['non2xx']}")
        for what in ("by name", "routed"):
            lines.append(f"2 vs 1 workers ({what}): {results[(2, what)]['rps'] / results[(1, what)]['rps']:.2f}x")
        gw, port = _serve(_pyramid(tmp, stub_port, "off"), 1, env)
        try:
            off = _wrk(port, "m0", args.seconds, args.connections, tmp)
        finally:
            stop_gateway(gw)
        on = results[(1, "by name")]["rps"]
        lines.append(f"decision log's cost (1 worker, by name): {on:.0f} req/s with the SQLite log vs "
                     f"{off['rps']:.0f} with `log: off`: {100 * (1 - on / off['rps']):.1f}% of throughput")
        # RSS over many requests, one worker, by name
        gw, port = _serve(_pyramid(tmp, stub_port, str(tmp / "log-rss.sqlite")), 1, env)
        try:
            samples, sent, seconds = [], 0, 5.0
            while sent < args.rss_requests and len(samples) < 25:
                r = _wrk(port, "m0", seconds, args.connections, tmp)
                sent += r["requests"]  # the 2 s warm-up's requests are not counted: a floor
                samples.append((sent, _rss_kb(gw.pid) // 1024))
                if len(samples) == 1:  # the rest in ~20 equal steps
                    seconds = float(round(max(5.0, min(120.0, (args.rss_requests - sent) / max(1.0, r["rps"]) / 20))))
            lines.append("RSS (MB) after n requests: " + ", ".join(f"{n:,}: {mb}" for n, mb in samples)
                         + f"  (asked for {args.rss_requests:,})")
        finally:
            stop_gateway(gw)
        if shutil.which("redis-server"):
            rport = free_port()
            redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            try:
                q = _quota_latency(f"redis://127.0.0.1:{rport}/0")
                lines.append("shared per-key checks, Redis on loopback: on the request's path (budget read + "
                             f"admission) p50 {q['path'][0]:.3f} ms  p99 {q['path'][1]:.3f} ms; settlement "
                             f"(after the answer, in the background) p50 {q['settle'][0]:.3f} ms  "
                             f"p99 {q['settle'][1]:.3f} ms")
            finally:
                redis.terminate()
    finally:
        stub.kill()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
