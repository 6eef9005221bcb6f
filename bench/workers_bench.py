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
from _proc import cpu_s, rss_kb  # noqa: E402
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
    ap.add_argument("--backend", choices=("auto", "nginx", "stub"), default="auto",
                    help="what answers the gateway: nginx with a canned answer (auto: if installed; apt-get install "
                         "nginx-light) or the Python stub (which takes a good part of a core itself)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (the median is shown)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    tmp = Path(tempfile.mkdtemp(prefix="tierwise-workers-"))
    nginx = args.backend == "nginx" or (args.backend == "auto" and (shutil.which("nginx") or
                                                                   Path("/usr/sbin/nginx").exists()))
    stub, stub_port = _load.start_nginx(tmp) if nginx else _start_stub(env)
    lines = [f"machine: {os.cpu_count()} cores; wrk -t2 -c{args.connections} -d{args.seconds:g}s; backend: "
             + ("nginx answering a canned completion (C, one worker)" if nginx else
                "tierwise's Python stub in its own process")]
    try:
        # throughput: every configuration once per round, rounds interleaved, the median reported
        # (machine load drifts over minutes; interleaving spreads it over all configurations alike)
        configs = [(w, what, model, f"log-{w}.sqlite") for w in (1, 2)
                   for what, model in (("by name", "m0"), ("routed", "tierwise"))] + [(1, "log off", "m0", "off")]
        runs: dict = {}
        for _ in range(args.rounds):
            for workers, what, model, log in configs:
                gw, port = _serve(_pyramid(tmp, stub_port, log if log == "off" else str(tmp / log)), workers, env)
                try:
                    c0 = cpu_s(gw.pid)
                    r = _wrk(port, model, args.seconds, args.connections, tmp)
                    r["cpu_ms"] = (cpu_s(gw.pid) - c0) * 1000 / max(1, r["requests"] + r["warmup_requests"])
                    runs.setdefault((workers, what), []).append(r)
                finally:
                    stop_gateway(gw)
        results = {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in runs.items()}
        lines[0] += f"; median of {args.rounds} interleaved rounds"
        for (workers, what), r in results.items():
            if what == "log off":
                continue
            lines.append(f"{workers} worker(s), {what:8s}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                         f"non-2xx {sum(x['non2xx'] for x in runs[(workers, what)])}  (rounds: "
                         + ", ".join(f"{x['rps']:.0f}" for x in runs[(workers, what)]) + ")")
        for what in ("by name", "routed"):
            lines.append(f"2 vs 1 workers ({what}): {results[(2, what)]['rps'] / results[(1, what)]['rps']:.2f}x")
        on, off = results[(1, "by name")]["rps"], results[(1, "log off")]["rps"]
        lines.append(f"decision log's cost (1 worker, by name): {on:.0f} req/s with the SQLite log vs "
                     f"{off:.0f} with `log: off` (rounds: " + ", ".join(f"{x['rps']:.0f}" for x in runs[(1, "log off")])
                     + f"): {100 * (1 - on / off):.1f}% of throughput")
        cpu = {k: statistics.median(x["cpu_ms"] for x in v) for k, v in runs.items()}
        lines.append("gateway CPU per request (median; less sensitive to the machine's drift than req/s): "
                     + ", ".join(f"{w}w {what} {c:.3f} ms" for (w, what), c in cpu.items())
                     + f"; the log's share of a request's CPU: "
                     f"{100 * (1 - cpu[(1, 'log off')] / cpu[(1, 'by name')]):.1f}%")
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
        print("\n".join(lines), flush=True)
        lines = []
        if args.rss_requests <= 0:
            return
        # RSS over many requests, one worker, by name
        gw, port = _serve(_pyramid(tmp, stub_port, str(tmp / "log-rss.sqlite")), 1, env)
        try:
            samples, sent, seconds = [], 0, 5.0
            while sent < args.rss_requests and len(samples) < 40:
                r = _wrk(port, "m0", seconds, args.connections, tmp)
                sent += r["requests"]  # the 2 s warm-up's requests are not counted: a floor
                samples.append((sent, rss_kb(gw.pid) // 1024))
                left = max(1, 20 - len(samples))  # the rest in ~20 steps, re-planned at the rate seen so far
                seconds = float(round(max(5.0, min(120.0, (args.rss_requests - sent) / max(1.0, r["rps"]) / left))))
            lines.append("RSS (MB) after n requests: " + ", ".join(f"{n:,}: {mb}" for n, mb in samples)
                         + f"  (asked for {args.rss_requests:,})")
        finally:
            stop_gateway(gw)
    finally:
        stub.terminate()  # nginx: SIGTERM stops its worker too
        stub.wait(10)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
