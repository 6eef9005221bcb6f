"""Regenerate docs/bench.md: router decision latency (``tierwise bench``) and gateway overhead
(``bench/gateway_bench.py``, stand-in and shipped router), with the machine and its load.

    python bench/write_bench_md.py [--iterations 2000] [--requests 400]

Every number on the page is printed by those scripts in this run; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _gateway(router: str, requests: int, *extra: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench/gateway_bench.py"), "--router", router,
                          "--requests", str(requests), *extra], capture_output=True, text=True, timeout=1800)
    return (out.stdout + (f"\n(exit {out.returncode})\n" + out.stderr[-1500:] if out.returncode else "")).strip()


def _compare(base: str, requests: int) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench/compare_gateway.py"), "--base", base, "--requests",
                          str(requests), "--rounds", "3"], capture_output=True, text=True, timeout=3600)
    return (out.stdout + (f"\n(exit {out.returncode})\n" + out.stderr[-1500:] if out.returncode else "")).strip()


def _soak(seconds: float) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench/soak.py"), "--clients", "128", "--seconds", str(seconds)],
                         capture_output=True, text=True, timeout=int(seconds) + 600)
    return (out.stdout + (f"\n(exit {out.returncode})\n" + out.stderr[-1500:] if out.returncode else "")).strip()


def _workers(seconds: float) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench/workers_bench.py"), "--seconds", str(seconds),
                          "--rss-requests", "1000000"], capture_output=True, text=True, timeout=3600)
    return (out.stdout + (f"\n(exit {out.returncode})\n" + out.stderr[-1500:] if out.returncode else "")).strip()


def _cells_quality() -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench/knn_cells_quality.py")], capture_output=True, text=True,
                         timeout=3600)
    return (out.stdout + (f"\n(exit {out.returncode})\n" + out.stderr[-1500:] if out.returncode else "")).strip()


def _reference_seconds() -> tuple[float, float]:
    """Seconds a fixed pure-Python loop and a fixed loop of small numpy products take: the machine's speed,
    for comparing pages from different runs. Both, because they drift apart: the Python loop once ran at its
    usual speed while the router's numpy-bound decisions took three times as long (same code)."""
    import numpy as np

    t = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    python_s = time.perf_counter() - t
    a, b = np.ones((64, 256), dtype=np.float32), np.ones(256, dtype=np.float32)
    t = time.perf_counter()
    for _ in range(200_000):  # the size of a decision's per-request products
        a @ b
    return python_s, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--workers-output", type=Path, help="the output of a `bench/workers_bench.py` run to show "
                    "instead of running it here (it takes ~20 min)")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/bench.md")
    ap.add_argument("--compare", default="3887fc5", help="revision to compare the gateway with ('' to skip)")
    ap.add_argument("--soak-seconds", type=float, default=60.0, help="soak duration (0 to skip)")
    args = ap.parse_args()

    from tierwise.bench import run_router_bench
    from tierwise.config import default_router_path

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()[0]
    speed0 = _reference_seconds()
    router = run_router_bench(ROOT / "data/outcomes/mmlu_pro.csv.gz", kind="ensemble", iterations=args.iterations,
                              as_json=True)
    gw_stand_in = _gateway("stand-in", args.requests)
    gw_default = _gateway("default", args.requests) if default_router_path().exists() else "(no shipped router)"
    gw_trained = _gateway("trained", args.requests)
    gw_trained_loop = _gateway("trained", args.requests, "--router-process", "off")
    compared = _compare(args.compare, args.requests) if args.compare else "(skipped)"
    soaked = _soak(args.soak_seconds) if args.soak_seconds else "(skipped)"
    if args.workers_output:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(args.workers_output.stat().st_mtime))
        workers = (f"(this section from a separate run of `python bench/workers_bench.py`, finished {stamp})\n"
                   + args.workers_output.read_text().strip())
    else:
        workers = _workers(10.0)
    cells_quality = _cells_quality()
    dash = (ROOT / "docs/dashboard.md").read_text()
    dash = dash[dash.index("<!-- bench:start -->") + 20:dash.index("<!-- bench:end -->")].strip() \
        if "<!-- bench:start -->" in dash else "(no dashboard benchmark yet: run `python bench/dashboard_bench.py`)"

    speed1 = _reference_seconds()
    rows = ["| prompt tokens | models | repeated p50 ms | repeated p99 ms | CPU p50 ms | distinct p50 ms | "
            "distinct p99 ms | cold p50 ms | decisions/s (distinct) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in router["cells"]:
        rows.append(f"| {c['tokens']} | {c['models']} | {c['p50_ms']:.3f} | {c['p99_ms']:.3f} | {c['cpu_p50_ms']:.3f} | "
                    f"{c['distinct_p50_ms']:.3f} | {c['distinct_p99_ms']:.3f} | {c['cold_p50_ms']:.3f} | "
                    f"{c['decisions_per_s']:,.0f} |")
    sweep = ["| training rows | fit s | distinct p50 ms | distinct p99 ms |", "|---:|---:|---:|---:|"]
    for r in router["rows"]:
        sweep.append(f"| {r['rows']:,} | {r['fit_s']:.1f} | {r['distinct_p50_ms']:.3f} | {r['distinct_p99_ms']:.3f} |")
    page = f"""# Speed

Generated by `python bench/write_bench_md.py` on {started} (do not edit by hand): {os.cpu_count()} cores,
{platform.processor() or platform.machine()}, Python {platform.python_version()}, load average {load0:.2f} at start.
Machine speed: a fixed pure-Python loop (10 million additions, one core) took {speed0[0]:.2f} s at the start and
{speed1[0]:.2f} s at the end; 200,000 numpy products (64 x 256 by 256, float32) took {speed0[1]:.2f} s and
{speed1[1]:.2f} s. The speed of this machine kind varies between runs: compare two pages by this line before
comparing their figures.
Wall-clock times include waiting for a CPU when the machine is busy; the CPU columns are the
routing thread's own time.

## Router decision latency (`tierwise bench`)

One routing decision = the whole hot path the gateway runs per request: tokenize + static
embedding + surface statistics -> every model's predicted quality -> decision rule. Router:
`{router['router']}` trained on {router['training_rows']:,} rows of `{Path(router['table']).name}`
(more models than the table has are noisy copies: latency depends on the count, not the names);
one thread (BLAS limited to 1). *Repeated*: one prompt {args.iterations} times (every cache warm).
*Distinct*: {router['distinct_prompts']} different prompts, none seen before (the tokenizer's
memo of words in steady state, as under real traffic). *Cold*: that memo emptied before each
decision (every word tokenized afresh: the worst case). Each cell is timed in {router.get('rounds', 1)}
interleaved rounds (every cell takes a turn before any takes its next): this machine's speed drifts over
seconds, and a slow spell then falls on every cell alike rather than on the cell that ran in it.

{chr(10).join(rows)}

By training-table size (500 tokens, 10 models, distinct prompts; the table tiled with a little
noise on the copies' features). From 4,096 rows on, the kNN member's rows are grouped into ~2 sqrt(n)
cells (spherical k-means, `src/tierwise/routers/_cells.py`) and a query's neighbourhood is the nearest
cells holding k rows, whose outcome sums are precomputed: a decision scores the cell centroids only:

{chr(10).join(sweep)}

What the cells cost in routing quality (`bench/knn_cells_quality.py`: 5-fold CV AIQ with the exact
scan of every row vs scoring the rows of the nearest cells (`cells`) vs the pooled nearest cells (`pooled`,
the default), for kNN alone and for the ensemble it is part of):

```
{cells_quality}
```

Batch routing (30 models, 2,000 prompts): {router['batch_decisions_per_s']:,.0f} decisions/s.
Encoder load: {router['encoder_load_s'] * 1000:.0f} ms. Peak RSS of the benchmark process (incl. the
training table and three trained routers): {router['peak_rss_mb']:.0f} MB.

## Gateway overhead and 32 concurrent clients (`bench/gateway_bench.py`)

A stub OpenAI-compatible backend (raw asyncio, answers in microseconds, its own process) is called
directly and through `tierwise serve` on loopback; the difference is what the gateway adds (HTTP
hop, validation, routing, decision log). Then 32 concurrent clients (half streaming, a Python
client: its figure is the client's limit, not the gateway's) go through the gateway; every request
must succeed and leave exactly one decision-log row. Last, `wrk` (C) with 32 connections, by model
name vs `model: tierwise` (three interleaved rounds, the median shown), each request a different real
prompt: what routing costs in throughput
(against a second gateway whose backend is nginx with a canned answer, when nginx is installed, so
the Python stub does not take the cores being measured).

Routed requests that arrive in the same event-loop turn are decided together (`engine/batching.py`);
a trained router decides those batches in a process of its own (`router_process: auto`, on while the
machine has a core more than the gateway has workers; `engine/router_process.py`), a request alone on
an idle gateway in the loop. The "routing (wrk gateway)" line says where the wrk gateway's decisions
were made and the mean batch. The CPU lines count the whole gateway process tree (event loop, log
writer, router process): what routing costs the machine, not only the event loop. "Gateway CPU per
request" is the sequential series (one request at a time: decisions in the loop); "CPU per request
under wrk" is the throughput runs.

Stand-in router (no training data):

```
{gw_stand_in}
```

Shipped default router (`src/tierwise/assets/default_router.tw`, trained on the embedded pyramid):

```
{gw_default}
```

A trained `ensemble` router over 10 models (the first 10 of `mmlu_pro.csv.gz`, 10k+ rows: the
neighbour search then uses its cell index):

```
{gw_trained}
```

The same router deciding in the event loop (`router_process: off`; batched all the same), run right
after the block above:

```
{gw_trained_loop}
```

## Before/after the engine layer (`bench/compare_gateway.py`)

The same benchmark on revision `{args.compare}` (the monolithic `server.py`, which forwarded only
text) and on this tree (engine layer, the client's body forwarded unchanged, capability checks,
circuit breakers, disconnect watching), interleaved so machine load hits both alike:

```
{compared}
```

The 32-client figure is limited by the one-process Python load client (see above), not by the gateway.

## Soak through backend faults (`bench/soak.py`)

128 clients in 4 processes for {args.soak_seconds:g} s (half streaming), while three stub backends (own
processes) are broken on a schedule: HTTP 500s, a model that never answers, killed models,
restarts. Per-model timeout 1 s, circuit breaker after 3 failures (2 s cooldown). Every 200 the
clients saw must be one decision-log row. The load generator shares the 2 cores with the gateway
and the stubs, so req/s here is a machine figure, not the gateway's ceiling.

```
{soaked}
```

## Dashboard over a 1,000,000-row log (`bench/dashboard_bench.py`)

Copied from [dashboard.md](dashboard.md#benchmark), which that script writes (it fills a 1,000,000-row
log first, so it is run on its own, not from here):

{dash}

## Workers, the log's cost, RSS, shared checks (`bench/workers_bench.py`)

`wrk` (C) drives the gateway with 32 connections; `tierwise serve --workers 1` vs `--workers 2`,
by model name and routed (stand-in router), each configuration once per round, three rounds
interleaved, the median shown (this machine's speed drifts by up to a third between minutes: the
rounds are printed); the same with `log: off` to show what the decision log costs; the time the
shared per-key checks take against Redis on loopback; and RSS of one worker over 1M requests. The
backend is nginx answering a canned completion (C, one worker, when installed: `apt-get install
nginx-light`), so the cores go to the gateway; wrk still shares the 2 cores with the workers, so a
second worker never has a core of its own.

```
{workers}
```
"""
    args.out.write_text(page)
    (args.out.with_suffix(".json")).write_text(json.dumps({"router": router}, indent=1))
    print(page)


if __name__ == "__main__":
    main()
