"""Gateway overhead before/after a change: ``bench/gateway_bench.py`` run on two revisions, interleaved.

    python bench/compare_gateway.py [--base 3887fc5] [--rounds 3] [--requests 400]

The base revision is checked out into a temporary git worktree and benchmarked with its own
``bench/gateway_bench.py`` (its own stub backend and gateway); the working tree is benchmarked
with the current one. Runs alternate base, current, base, current ... so a busy machine slows
both alike; the table reports the median of each figure over the rounds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the commit before the engine layer (Gateway v2): the monolithic server.py
DEFAULT_BASE = "3887fc5"
_FIGURES = {
    "routed p50 overhead ms": r"gateway tierwise .*?overhead p50 \+([\d.]+) ms",
    "routed p99 overhead ms": r"gateway tierwise .*?overhead p50 \+[\d.]+ ms\s+p99 \+([\d.]+) ms",
    "by-name p50 overhead ms": r"gateway direct name .*?overhead p50 \+([\d.]+) ms",
    "routed CPU ms/request": r"CPU per request.*?routed ([\d.]+) ms",
    "by-name CPU ms/request": r"CPU per request.*?by name ([\d.]+) ms",
    "32 clients req/s": r"32 clients: .*?\(([\d.]+) req/s\)",
}


def _run(tree: Path, requests: int) -> dict[str, float]:
    script = tree / "bench/gateway_bench.py"
    # the wrk phase (newer trees only) measures nothing compared here: skip it
    skip_wrk = ["--wrk-seconds", "0"] if "--wrk-seconds" in script.read_text() else []
    out = subprocess.run([sys.executable, str(script), "--requests", str(requests), *skip_wrk],
                         cwd=tree, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"gateway_bench failed in {tree}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    got = {}
    for name, pattern in _FIGURES.items():
        m = re.search(pattern, out.stdout)
        if m:
            got[name] = float(m.group(1))
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default=DEFAULT_BASE, help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), rev], cwd=ROOT, check=True)
        try:
            runs: dict[str, list[dict[str, float]]] = {"base": [], "current": []}
            for _ in range(args.rounds):
                runs["base"].append(_run(base, args.requests))
                runs["current"].append(_run(ROOT, args.requests))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    print(f"gateway overhead over a direct call, stand-in router, median of {args.rounds} interleaved rounds "
          f"x {args.requests} sequential requests")
    print(f"{'':28s} {'base ' + rev:>14s} {'current':>10s}")
    for name in _FIGURES:
        vals = [[r[name] for r in runs[k] if name in r] for k in ("base", "current")]
        cells = [f"{statistics.median(v):.2f}" if v else "-" for v in vals]
        print(f"{name:28s} {cells[0]:>14s} {cells[1]:>10s}")


if __name__ == "__main__":
    main()
