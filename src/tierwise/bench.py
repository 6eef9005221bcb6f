"""``tierwise bench``: what one routing decision costs, measured, on one core.

A decision is the whole hot path the gateway runs per request: featurize (tokenize + embed +
surface stats) -> predict every model's quality -> apply the rule. Routers are trained on a real
table; prompt lengths and model counts are varied to show how the cost grows.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np

TOKEN_TARGETS = (50, 500, 4000)
MODEL_COUNTS = (2, 10, 30)


def _prompt_of_tokens(encoder, base: list[str], target: int) -> str:
    text = ""
    i = 0
    while encoder.count_tokens(text) < target:
        text += base[i % len(base)] + "\n"
        i += 1
    words = text.split(" ")
    lo, hi = 1, len(words)
    while lo < hi:  # trim to the target length
        mid = (lo + hi) // 2
        if encoder.count_tokens(" ".join(words[:mid])) < target:
            lo = mid + 1
        else:
            hi = mid
    return " ".join(words[:lo])


def _table_with_n_models(table, n: int):
    """The first n models; past the table's width, noisy copies (latency depends on n, not on names)."""
    from dataclasses import replace

    t = table.with_models(table.models[: min(n, table.n_models)])
    rng = np.random.default_rng(0)
    while t.n_models < n:
        j = t.n_models % table.n_models
        flip = rng.random(len(t)) < 0.1
        col = np.where(flip, 1 - np.nan_to_num(t.correct[:, j]), t.correct[:, j])
        t = replace(
            t,
            models=t.models + [f"{t.models[j]}-copy{t.n_models}"],
            correct=np.column_stack([t.correct, col]),
            cost=np.column_stack([t.cost, t.cost[:, j] * 1.1]),
        )
    return t


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    a = np.array(samples) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def run_router_bench(table_path: Path, kind: str = "ensemble", iterations: int = 2000, as_json: bool = False) -> dict:
    from threadpoolctl import threadpool_limits

    from .features import Featurizer
    from .router import Router
    from .table import load_table

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    featurizer = Featurizer()
    load_s = time.perf_counter() - t0
    table = load_table(table_path).clean()
    X = featurizer.transform(table.prompts)
    prompts = {n: _prompt_of_tokens(featurizer.encoder, table.prompts[:200], n) for n in TOKEN_TARGETS}
    results: dict = {
        "router": kind,
        "table": str(table_path),
        "training_rows": len(table),
        "encoder": featurizer.encoder.name,
        "encoder_load_s": round(load_s, 4),
        "cells": [],
    }
    log = (lambda *a: None) if as_json else print
    log(f"router={kind} trained on {len(table)} rows of {table_path}; one thread; {iterations} decisions per cell")
    import os

    results["load_average_1m"] = round(os.getloadavg()[0], 2)
    results["cpu_count"] = os.cpu_count()
    log(f"load average {results['load_average_1m']} on {results['cpu_count']} cores (wall times include waits"
        " for the CPU on a busy machine; CPU columns are this thread's own time)")
    log(f"{'tokens':>7} {'models':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'decisions/s':>12}"
        f" {'CPU p50 ms':>11} {'CPU p99 ms':>11}")
    with threadpool_limits(limits=1):
        for n_models in MODEL_COUNTS:
            t = _table_with_n_models(table, n_models)
            router = Router(kind, featurizer=featurizer).fit(t, X=X, holdout=0.0)
            for n_tok, text in prompts.items():
                for _ in range(50):  # warm caches
                    router.route(text)
                wall, cpu = [], []
                for _ in range(iterations):
                    c, s = time.thread_time(), time.perf_counter()
                    router.route(text)
                    wall.append(time.perf_counter() - s)
                    cpu.append(time.thread_time() - c)
                p50, p99, mean = _percentiles(wall)
                cpu50, cpu99, _ = _percentiles(cpu)
                cell = {
                    "tokens": n_tok,
                    "models": n_models,
                    "p50_ms": round(p50, 4),
                    "p99_ms": round(p99, 4),
                    "mean_ms": round(mean, 4),
                    "cpu_p50_ms": round(cpu50, 4),
                    "cpu_p99_ms": round(cpu99, 4),
                    "decisions_per_s": round(1000.0 / mean, 1),
                }
                results["cells"].append(cell)
                log(f"{n_tok:>7} {n_models:>6} {p50:>8.3f} {p99:>8.3f} {mean:>8.3f} {cell['decisions_per_s']:>12.0f}"
                    f" {cpu50:>11.3f} {cpu99:>11.3f}")
        # batch throughput: how fast offline evaluation / re-routing of logs goes
        batch = table.prompts[:2000]
        s = time.perf_counter()
        router.route_batch(batch)
        results["batch_decisions_per_s"] = round(len(batch) / (time.perf_counter() - s), 1)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["rss_before_mb"] = round(rss0, 1)
    log(f"batch routing (30 models, 2000 prompts): {results['batch_decisions_per_s']:.0f} decisions/s")
    log(f"peak RSS: {results['peak_rss_mb']:.0f} MB (process incl. training data)")
    if as_json:
        print(json.dumps(results, indent=1))
    return results
