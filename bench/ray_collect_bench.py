"""cells/s of ``tierwise collect`` with the local runner vs the Ray runner on this machine, and Ray's
start-up overhead; writes its figures into docs/ray.md (between the ``ray-bench`` markers).

    python bench/ray_collect_bench.py [--prompts 24] [--max-tokens 32] [--no-write]

The pyramid is two entries over the embedded SmolLM2-135M (GGUF, llama.cpp), the prompts are
arithmetic questions graded ``numeric``. Local: one model after the other, each with every core (and again with one thread).
Ray: a local Ray instance with every core, one actor per model with one core each, both at once.
Each run starts from an empty cell store. Every number on the page comes from this script's run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DOC = ROOT / "docs" / "ray.md"
START, END = "<!-- ray-bench:start -->", "<!-- ray-bench:end -->"


def _pyramid(tmp: Path, threads: int):
    from tierwise.config import Pyramid

    cfg = tmp / f"pyramid-{threads}.yaml"
    cfg.write_text("models:\n" + "".join(
        f"  - {{name: {name}, backend: llama_cpp, embedded: smollm2-135m, input_per_1m: {p}, "
        f"output_per_1m: {2 * p}, context_window: 512, n_threads: {threads}}}\n"
        for name, p in (("tiny-a", 0.01), ("tiny-b", 0.1))))
    return Pyramid.load(cfg)


def _items(n: int) -> list[dict]:
    return [{"prompt": f"What is {3 + i} + {2 * i + 5}?", "answer": str(3 * i + 8), "item_id": str(i)} for i in range(n)]


def _collect(items, specs, grader, out: Path, runner):
    from tierwise.collection import run_collect

    first: list[float] = []
    t0 = time.perf_counter()
    report = asyncio.run(run_collect(items, specs, grader, out, progress=False, runner=runner,
                                     on_cell=lambda *_: first.append(time.perf_counter()) if not first else None))
    wall = time.perf_counter() - t0
    assert not report.failed, report.failed
    return report, wall, (first[0] - t0) if first else float("nan")


def _actor_start(ray, spec, grader) -> float:
    """Spawn one worker process, import tierwise, load the model: until ``ready()`` answers."""
    from tierwise.collection.ray_worker import CellWorker

    t0 = time.perf_counter()
    handle = ray.remote(CellWorker).options(num_cpus=1).remote(spec, grader, 1)
    ray.get(handle.ready.remote())
    took = time.perf_counter() - t0
    ray.kill(handle)
    return took


def run(n: int, max_tokens: int) -> dict:
    import pandas as pd
    import ray

    from tierwise.collection import specs_from_pyramid
    from tierwise.collection.runner_local import LocalRunner
    from tierwise.collection.runner_ray import RayRunner
    from tierwise.graders import make_grader

    cores = os.cpu_count() or 1
    items, grader = _items(n), make_grader("numeric", max_tokens=max_tokens)
    out: dict = {"cores": cores, "cells": 2 * n, "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for threads in sorted({cores, 1}, reverse=True):
            specs = specs_from_pyramid(_pyramid(tmp, threads))
            rep, wall, _ = _collect(items, specs, grader, tmp / f"local{threads}.csv.gz", LocalRunner())
            out[f"local{threads}"] = {"wall_s": wall, "cells_s": rep.computed / wall}

        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="warning")
        out["ray_init_s"] = time.perf_counter() - t0
        try:
            ray_specs = specs_from_pyramid(_pyramid(tmp, 1))
            out["actor_start_s"] = _actor_start(ray, ray_specs[0], grader)
            rep, wall, first = _collect(items, ray_specs, grader, tmp / "ray.csv.gz", RayRunner(cpus_per_actor=1))
            out["ray"] = {"wall_s": wall, "cells_s": rep.computed / wall, "first_cell_s": first}
        finally:
            t0 = time.perf_counter()
            ray.shutdown()
            out["ray_shutdown_s"] = time.perf_counter() - t0
        a, b = (pd.read_csv(tmp / f) for f in (f"local{cores}.csv.gz", "ray.csv.gz"))
        drop = [c for c in a.columns if c.startswith("latency_s|")]
        out["same_table"] = a.drop(columns=drop).equals(b.drop(columns=drop))
    out["load_after"] = os.getloadavg()[0]
    out["ray_version"] = ray.__version__
    return out


def markdown(r: dict, n: int, max_tokens: int) -> str:
    ry = r["ray"]
    local_rows = [f"| local | one model after the other, {t} thread{'s' if t > 1 else ''} each | "
                  f"{r[f'local{t}']['wall_s']:.1f} | {r[f'local{t}']['cells_s']:.2f} |"
                  for t in sorted({r["cores"], 1}, reverse=True)]
    return "\n".join([
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {r['cores']} cores "
        f"(load {r['load_before']:.2f} before, {r['load_after']:.2f} after; the machine is shared), Ray "
        f"{r['ray_version']}, by `python bench/ray_collect_bench.py --prompts {n} --max-tokens {max_tokens}`: "
        f"{r['cells']} cells (2 SmolLM2-135M entries x {n} arithmetic prompts, grader numeric, greedy), each run "
        "from an empty cell store.",
        "",
        "| runner | how | wall (s) | cells/s |",
        "|---|---|---:|---:|",
        *local_rows,
        f"| Ray | one actor per model, 1 CPU / thread each, both at once (incl. actor start) | {ry['wall_s']:.1f} | "
        f"{ry['cells_s']:.2f} |",
        "",
        "| Ray start-up overhead | s |",
        "|---|---:|",
        f"| `ray.init` (start a local Ray instance) | {r['ray_init_s']:.1f} |",
        f"| one actor: process, `import tierwise`, load the GGUF, `ready()` | {r['actor_start_s']:.1f} |",
        f"| `collect --ray` until the first cell is committed | {ry['first_cell_s']:.1f} |",
        f"| `ray.shutdown` | {r['ray_shutdown_s']:.1f} |",
        "",
        f"Same table from both runners (every column but `latency_s|`): **{'yes' if r['same_table'] else 'NO'}**.",
    ])


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC}: markers {START} / {END} not found")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ray.md alone")
    args = ap.parse_args()
    text = markdown(run(args.prompts, args.max_tokens), args.prompts, args.max_tokens)
    print(text)
    if not args.no_write:
        write_doc(text)
        print(f"\nwrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
