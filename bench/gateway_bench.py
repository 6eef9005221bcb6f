"""Gateway overhead and concurrency bench, on loopback only.

1. Overhead: the same chat request sent straight to a fast local OpenAI-compatible backend and
   through ``tierwise serve`` (routed with ``model="tierwise"``, stand-in router); the difference of
   p50/p99 latencies is what the gateway adds (HTTP hop + parse + route + log).
2. Load: 32 concurrent clients through the gateway, bounded in requests and time; reports errors,
   throughput, latency, and checks that the decision log has exactly one row per request.

The backend is a stub written on raw asyncio (answers in microseconds), so model time does not
hide gateway time. Run: ``python bench/gateway_bench.py [--requests 400] [--clients 32]``.
The stub and the gateway helpers live in ``tierwise.testing`` (shared with the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tierwise.testing import StubBackend, free_port, start_gateway, stop_gateway, write_pyramid  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _wrk  # noqa: E402
from _proc import cpu_s, wait_port  # noqa: E402

__all__ = ["StubBackend", "free_port", "start_gateway", "stop_gateway", "write_pyramid"]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _timed_posts(url: str, body: dict, n: int, warmup: int = 30) -> list[float]:
    import httpx

    out = []
    with httpx.Client(timeout=10) as c:
        for i in range(n + warmup):
            t = time.perf_counter()
            r = c.post(url, json=body)
            dt = time.perf_counter() - t
            r.raise_for_status()
            if i >= warmup:
                out.append(dt * 1000)
    return out


async def _load(url: str, clients: int, total: int, deadline_s: float) -> tuple[list[float], list[str]]:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    sent = 0
    stop_at = time.monotonic() + deadline_s

    async def client(i: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(timeout=30) as c:
            while sent < total and time.monotonic() < stop_at:
                sent += 1
                body = {"model": "tierwise", "messages": [{"role": "user", "content": f"client {i} question {sent}"}],
                        "max_tokens": 16, "stream": sent % 2 == 0}
                t = time.perf_counter()
                try:
                    r = await c.post(url, json=body)
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                    elif body["stream"] and not r.text.rstrip().endswith("data: [DONE]"):
                        errors.append("stream did not end with [DONE]")
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                lat.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return lat, errors


def _prompts(n: int = 500) -> list[str]:
    """Distinct real prompts (the mmlu_pro table's), or generated ones without the data folder."""
    from tierwise.promptsets import data_dir

    path = data_dir() / "mmlu_pro.csv.gz"
    if path.is_file():
        import pandas as pd

        texts = pd.read_csv(path, usecols=["prompt"])["prompt"].astype(str).tolist()
        return texts[-n:]
    return [f"Question {i}: what is {i} times {i + 7}? Explain the steps." for i in range(n)]


def _train(tmp: Path) -> Path:
    """An ensemble router on the first 10 models of the mmlu_pro table (10k+ rows)."""
    from tierwise.promptsets import data_dir
    from tierwise.router import Router
    from tierwise.table import load_table

    table = load_table(data_dir() / "mmlu_pro.csv.gz").clean()
    table = table.with_models(table.models[:10])
    return Router("ensemble").fit(table).save(tmp / "trained.tw")


def _routing_line(port: int) -> str:
    """Where the wrk gateway's decisions were made (its /metrics): batches in the loop or the router process."""
    import re

    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    def value(pattern: str) -> float:
        found = re.search(r"(?m)^" + re.escape(pattern) + r" ([0-9.e+]+)$", text)
        return float(found.group(1)) if found else 0.0

    loop, proc = (value(f'tierwise_routing_batches_total{{where="{w}"}}') for w in ("loop", "process"))
    decisions = value("tierwise_routing_decisions_total")
    where = "its own process" if value("tierwise_router_process") else "the event loop"
    return (f"routing (wrk gateway): router deciding in {where}; {decisions:.0f} decisions in {loop + proc:.0f} "
            f"batches (mean {decisions / max(1.0, loop + proc):.1f}; {proc:.0f} batches in the router process, "
            f"{loop:.0f} in the loop)")


def _wrk_phase(port: int, name: str, seconds: float, tmp: Path, cfg: Path, gateway, rounds: int = 3
               ) -> list[tuple[str, int, int]]:
    """wrk, 32 connections, by name vs routed, each request a different prompt (of 500). With nginx
    installed, against a second gateway (same models and router) whose backend is nginx answering a
    canned completion: the Python stub would take a good part of the 2 cores from the gateway."""
    import re
    import shutil

    if not shutil.which("wrk"):
        return [("wrk: not installed (apt-get install wrk); throughput phase skipped", 0, 0)]
    nginx = gw = None
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        (tmp / "nginx").mkdir(exist_ok=True)
        nginx, nport = _wrk.start_nginx(tmp / "nginx")
        text = re.sub(r"http://127\.0\.0\.1:\d+/v1", f"http://127.0.0.1:{nport}/v1", cfg.read_text())
        ncfg = tmp / "pyramid-nginx.yaml"
        ncfg.write_text(re.sub(r"(?m)^log: .*$", f"log: {tmp / 'log-nginx.sqlite'}", text))
        port = free_port()
        gw = start_gateway(ncfg, port)
    backend = "nginx (canned answer)" if nginx else "the Python stub"
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    texts = _prompts()
    out, runs = [], {"by name": [], "routed": []}
    try:
        scripts = {label: _wrk.script(tmp, [{"model": model, "max_tokens": 16,
                                             "messages": [{"role": "user", "content": t}]} for t in texts])
                   for label, model in (("by name", name), ("routed", "tierwise"))}
        for _ in range(rounds):  # interleaved: the machine's drift between minutes hits both alike
            for label, lua in scripts.items():
                runs[label].append(_wrk.run(url, lua, seconds, 32, pid=(gw or gateway).pid))
        res = {label: sorted(rs, key=lambda x: x["rps"])[len(rs) // 2] for label, rs in runs.items()}  # median rounds
        for label, rs in runs.items():
            r = res[label]
            # requests through the nginx gateway go to its own log, not the one counted below
            counted = 0 if nginx else sum(x["requests"] + x["warmup_requests"] for x in rs)
            each = ", ".join(f"{x['rps']:.0f}" for x in rs)
            out.append((f"wrk 32 connections {seconds:g}s x {rounds} interleaved rounds, backend {backend}, {label:7s}: "
                        f"{r['rps']:7.0f} req/s (median; rounds {each})  "
                        f"p50 {r['p50_ms']:.2f} ms  non-2xx {sum(x['non2xx'] for x in rs)}", counted,
                        0 if nginx else (32 + 8) * len(rs)))
        cpu = {label: sorted(x["cpu_ms"] for x in rs)[len(rs) // 2] for label, rs in runs.items()}
        out.append((f"CPU per request under wrk (the gateway process tree: event loop, log writer, router process; "
                    f"median): by name {cpu['by name']:.3f} ms, routed {cpu['routed']:.3f} ms", 0, 0))
        out.append((_routing_line(port), 0, 0))
    finally:
        if gw is not None:
            stop_gateway(gw)
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
    # each round's routed run against the by-name run just before it: the machine's drift between rounds
    # cancels in the pair, and the spread of the pairs says how far one ratio can be trusted
    paired = sorted(r["rps"] / b["rps"] for b, r in zip(runs["by name"], runs["routed"]))
    out.append((f"routed / by name throughput: {res['routed']['rps'] / res['by name']['rps']:.0%} "
                f"({len(texts)} distinct prompts in rotation); round by round {paired[len(paired) // 2]:.0%} "
                f"(median; {min(paired):.0%} to {max(paired):.0%})", 0, 0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="sequential requests per overhead series")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--load-requests", type=int, default=640, help="total requests of the concurrency run")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time bound of the concurrency run")
    ap.add_argument("--router", default="stand-in",
                    help="'stand-in' (untrained heuristic), 'default' (the shipped router of the embedded pyramid; "
                         "the stub models then take its model names), 'trained' (an ensemble trained here on 10 "
                         "models x the mmlu_pro table), or a router artifact path")
    ap.add_argument("--wrk-seconds", type=float, default=10.0,
                    help="then wrk (C) with 32 connections for this long, by name vs routed, distinct prompts "
                         "(0: skip)")
    ap.add_argument("--wrk-rounds", type=int, default=3,
                    help="interleaved (by name, routed) wrk rounds; the medians and the round-by-round ratio are reported")
    ap.add_argument("--router-process", choices=("auto", "on", "off"), default="auto",
                    help="the pyramid's router_process setting (where a trained router decides)")
    ap.add_argument("--stub-port", type=int, help=argparse.SUPPRESS)  # internal: run only the stub backend
    args = ap.parse_args()
    if args.stub_port:
        stub = StubBackend(port=args.stub_port)
        stub.start()
        stub._thread.join()
        return 0
    from tierwise.decision_log import DecisionLog

    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "log.sqlite")
        # the stub runs in its own process: in this one it would compete with the client for the GIL
        stub_port = free_port()
        stub_proc = subprocess.Popen([sys.executable, __file__, "--stub-port", str(stub_port)])
        stub_url = f"http://127.0.0.1:{stub_port}/v1"
        wait_port(stub_port)
        names, extra = None, ""
        if args.router != "stand-in":
            from tierwise.config import default_router_path
            from tierwise.router import Router

            if args.router == "trained":
                router_path = _train(Path(tmp))
            else:
                router_path = default_router_path() if args.router == "default" else Path(args.router).resolve()
            names = Router.load(router_path).models
            extra = f"router: {router_path}\n"
        extra += f"router_process: {args.router_process}\n"
        cfg = write_pyramid(Path(tmp) / "pyramid.yaml", stub_url, log, modes=("echo",) * (len(names) if names else 3),
                            names=names, extra=extra)
        print(f"router: {args.router}{' (' + ', '.join(names) + ')' if names else ''}")
        port = free_port()
        proc = start_gateway(cfg, port)
        try:
            body = {"messages": [{"role": "user", "content": "What is 2 + 2? Answer briefly."}], "max_tokens": 16}
            direct = _timed_posts(stub_url + "/chat/completions", {**body, "model": "echo"}, args.requests)
            cpu0 = cpu_s(proc.pid)
            routed = _timed_posts(f"http://127.0.0.1:{port}/v1/chat/completions", {**body, "model": "tierwise"},
                                  args.requests)
            cpu1 = cpu_s(proc.pid)
            named = _timed_posts(f"http://127.0.0.1:{port}/v1/chat/completions", {**body, "model": (names or ["m0"])[0]},
                                 args.requests)
            cpu2 = cpu_s(proc.pid)
            t0 = time.perf_counter()
            cpu3 = cpu_s(proc.pid)
            lat, errors = asyncio.run(_load(f"http://127.0.0.1:{port}/v1/chat/completions", args.clients,
                                            args.load_requests, args.max_seconds))
            wall = time.perf_counter() - t0
            load_cpu = cpu_s(proc.pid) - cpu3
            wrk_lines = (_wrk_phase(port, (names or ["m0"])[0], args.wrk_seconds, Path(tmp), cfg, proc,
                                    max(1, args.wrk_rounds)) if args.wrk_seconds else [])
        finally:
            out = stop_gateway(proc)
            stub_proc.terminate()
            stub_proc.wait(10)
        rows = DecisionLog(log).count()
    d50, d99 = _pct(direct, 0.5), _pct(direct, 0.99)
    print(f"direct backend      p50 {d50:6.2f} ms  p99 {d99:6.2f} ms  (n={len(direct)})")
    for label, xs in (("gateway tierwise", routed), ("gateway direct name", named)):
        print(f"{label:<19} p50 {_pct(xs, 0.5):6.2f} ms  p99 {_pct(xs, 0.99):6.2f} ms  "
              f"overhead p50 {_pct(xs, 0.5) - d50:+.2f} ms  p99 {_pct(xs, 0.99) - d99:+.2f} ms")
    n = args.requests + 30
    print(f"gateway CPU per request (less sensitive to a busy machine): routed {(cpu1 - cpu0) / n * 1000:.2f} ms, "
          f"by name {(cpu2 - cpu1) / n * 1000:.2f} ms")
    print(f"{args.clients} clients: {len(lat)} requests in {wall:.1f} s ({len(lat) / wall:.0f} req/s), "
          f"p50 {_pct(lat, 0.5):.1f} ms p99 {_pct(lat, 0.99):.1f} ms, errors {len(errors)}; "
          f"gateway busy {load_cpu / wall:.0%} of one core ({load_cpu / max(1, len(lat)) * 1000:.2f} ms CPU/request)")
    for e in sorted(set(errors))[:5]:
        print("  error:", e)
    print("\n".join(line for line, _, _ in wrk_lines))
    # the direct series is not logged; the two gateway series, the load run and wrk's requests are
    # (wrk does not count the requests still in flight when it stops: up to its connections per run)
    logged_expected = 2 * (args.requests + 30) + len(lat) + sum(n for _, n, _ in wrk_lines)
    slack = sum(k for _, _, k in wrk_lines)
    ok = logged_expected <= rows <= logged_expected + slack
    print(f"decision log rows {rows} / gateway requests {logged_expected}"
          + (f" (+ up to {slack} in flight when wrk stopped)" if slack else "") + f": {'OK' if ok else 'MISMATCH'}")
    if not ok or errors:
        print(out[-2000:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
