"""The dashboard over a 1,000,000-row decision log: how fast its overview API answers.

    python bench/dashboard_bench.py [--rows 1000000] [--calls 7] [--keep PATH] [--no-write]

Fills a SQLite log with synthetic traffic over 7 days (``tierwise.testing.traffic``: 20,000
distinct requests repeated with new ids and times, one ``executemany`` in one transaction), serves
``tierwise dashboard``'s app over it (uvicorn on loopback, in this process) and times
``GET /dashboard/api/overview`` over HTTP: every call asks for a slightly different custom range,
so none is answered from the dashboard's few-second cache. Writes the "Benchmark" section of
docs/dashboard.md (between its bench markers) from the numbers of this run; nothing is typed in.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def fill(path: Path, rows: int, now: float) -> float:
    import numpy as np

    from tierwise.decision_log import DecisionLog
    from tierwise.engine.record import COLUMNS, to_row
    from tierwise.gateway.guard import key_hash
    from tierwise.testing.dashboard import KEYS
    from tierwise.testing.traffic import DEMO_TIERS, synthetic_requests

    t0 = time.perf_counter()
    DecisionLog(path).close()  # the schema and the dashboard's indexes, as the gateway makes them
    keys = [key_hash(k) for k in KEYS]
    base = [to_row(r) for r in synthetic_requests(20_000, DEMO_TIERS, start=0, end=1, keys=keys, seed=7)]
    ts = np.sort(np.random.default_rng(7).uniform(now - 7 * 86400, now, rows)).tolist()
    i_id, i_ts = COLUMNS.index("id"), COLUMNS.index("ts")

    def requests():
        for i in range(rows):
            row = list(base[i % len(base)])
            row[i_id], row[i_ts] = f"req-{i:08d}", ts[i]
            yield row

    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA cache_size=-400000")
    sql = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    con.executemany(sql, requests())
    rated = np.random.default_rng(8).choice(rows, rows // 50, replace=False)
    con.executemany("INSERT INTO feedback (request_id, ts, score) VALUES (?, ?, ?)",
                    ((f"req-{i:08d}", now, float(i % 3 != 0)) for i in rated))
    con.commit()
    con.close()
    return time.perf_counter() - t0


def timed_calls(client, url: str, params: dict, calls: int, vary: bool = True) -> list[float]:
    out = []
    for i in range(calls):
        q = dict(params)
        if vary:
            q["to"] = float(q["to"]) + i * 1e-3  # a new range each call: never a cache hit
        t0 = time.perf_counter()
        r = client.get(url, params=q, timeout=120)
        out.append(1000 * (time.perf_counter() - t0))
        r.raise_for_status()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=7)
    ap.add_argument("--keep", type=Path, help="fill this file (kept) instead of a temporary one")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/dashboard.md alone")
    args = ap.parse_args()

    import httpx

    from tierwise.config import Pyramid
    from tierwise.dashboard.context import from_pyramid
    from tierwise.dashboard.standalone import create_app
    from tierwise.gateway.guard import key_hash
    from tierwise.testing.dashboard import KEYS, Server, write_demo_pyramid

    tmp = Path(tempfile.mkdtemp(prefix="tierwise-dash-bench-"))
    path = args.keep or tmp / "log.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    now = time.time()
    fill_s = fill(path, args.rows, now)
    pyramid = Pyramid.load(write_demo_pyramid(tmp / "pyramid.yaml", str(path)))
    app = create_app(str(path), from_pyramid(pyramid))
    week = {"from": now - 7 * 86400 - 60, "to": now + 1}
    day = {"from": now - 86400, "to": now + 1}
    load = os.getloadavg()
    with Server(app) as server, httpx.Client(base_url=server.url) as client:
        first = timed_calls(client, "/dashboard/api/overview", week, 1)[0]
        overview_week = timed_calls(client, "/dashboard/api/overview", week, args.calls)
        overview_day = timed_calls(client, "/dashboard/api/overview", day, args.calls)
        overview_key = timed_calls(client, "/dashboard/api/overview", {**week, "key": key_hash(KEYS[0])}, args.calls)
        n_week = client.get("/dashboard/api/overview", params=week).json()["stats"]["requests"]
        n_day = client.get("/dashboard/api/overview", params=day).json()["stats"]["requests"]
        quality_day = timed_calls(client, "/dashboard/api/quality", day, 3)
        whatif_day = timed_calls(client, "/dashboard/api/whatif", day, 3)
        decisions = timed_calls(client, "/dashboard/api/decisions", {**day, "status": "error"}, 3)
    size_mb = sum(os.path.getsize(str(path) + s) for s in ("", "-wal") if os.path.exists(str(path) + s)) / 1e6
    med = statistics.median
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; load average at the start "
        f"{load[0]:.2f} (other processes share the cores).",
        "",
        f"Log: {args.rows:,} requests over 7 days + {args.rows // 50:,} ratings, {size_mb:,.0f} MB with its indexes, "
        f"filled in {fill_s:.1f} s (one `executemany`, one transaction).",
        "",
        "| `GET /dashboard/api/...` (over HTTP, no cache hit) | requests in range | median | max |",
        "|---|---:|---:|---:|",
        f"| overview, 7 days (the whole log) | {n_week:,} | **{med(overview_week):.0f} ms** | {max(overview_week):.0f} ms |",
        f"| overview, 7 days, one client key's | {n_week // len(KEYS):,} (about) | {med(overview_key):.0f} ms | "
        f"{max(overview_key):.0f} ms |",
        f"| overview, 24 h | {n_day:,} | {med(overview_day):.0f} ms | {max(overview_day):.0f} ms |",
        f"| quality, 24 h | {n_day:,} | {med(quality_day):.0f} ms | {max(quality_day):.0f} ms |",
        f"| what-if, 24 h (re-decides every routed request at {64} knobs) | {n_day:,} | {med(whatif_day):.0f} ms | "
        f"{max(whatif_day):.0f} ms |",
        f"| decisions, 24 h, errors only, first page | {n_day:,} | {med(decisions):.0f} ms | {max(decisions):.0f} ms |",
        "",
        f"The first overview call after start-up (cold page cache): {first:.0f} ms. "
        f"Target: the overview of the 1,000,000-row log under 500 ms.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        doc = ROOT / "docs/dashboard.md"
        body = doc.read_text()
        if START not in body or END not in body:
            sys.exit(f"{doc}: no {START} ... {END} markers to write between")
        head, rest = body.split(START, 1)
        doc.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
        print(f"wrote {doc}")


if __name__ == "__main__":
    main()
