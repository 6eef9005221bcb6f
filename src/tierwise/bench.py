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
ROW_COUNTS = (1_000, 10_000, 100_000)
ROUNDS = 5  # interleaved timing rounds per cell (run_router_bench)
MIN_ROWS = 20  # the fewest usable rows a router trains on (Router.fit)


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


def _distinct_prompts(base: list[str], counts: list[int], target: int, n: int, offset: int) -> list[str]:
    """``n`` different prompts of about ``target`` tokens (``counts``: tokens of each ``base`` prompt
    and its separator), each a run of consecutive table prompts from its own starting point."""
    out = []
    for i in range(n):
        j, total, parts = (offset + i * 17) % len(base), 0, []
        while total < target:
            parts.append(base[j])
            total += counts[j]
            j = (j + 1) % len(base)
        text = "\n".join(parts)
        if total > target * 1.2:  # one long prompt overshot: cut at a word
            words = text.split(" ")
            text = " ".join(words[: max(1, int(len(words) * target / total))])
        out.append(text)
    return out


def _table_with_n_rows(table, X: np.ndarray, n: int, seed: int = 0):
    """The table tiled to n rows; the copies' features get a little noise (distinct points, the same topics)."""
    idx = np.arange(n) % len(table)
    rng = np.random.default_rng(seed)
    Xn = X[idx].copy()
    copies = np.arange(n) >= len(table)
    Xn[copies] += rng.normal(scale=0.02, size=(int(copies.sum()), X.shape[1])).astype(np.float32)
    return table.rows(idx), Xn


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    a = np.array(samples) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def _time(router, texts: list[str], cold_encoder=None) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for text in texts:
        if cold_encoder is not None:
            cold_encoder.clear_memo()  # nothing tokenized before: the worst case
        c, s = time.thread_time(), time.perf_counter()
        router.route(text)
        wall.append(time.perf_counter() - s)
        cpu.append(time.thread_time() - c)
    return wall, cpu


def _slices(items: list, rounds: int) -> list[list]:
    """``items`` cut into ``rounds`` consecutive parts, as equal as they come."""
    bounds = [len(items) * r // rounds for r in range(rounds + 1)]
    return [items[bounds[r]:bounds[r + 1]] for r in range(rounds)]


def run_router_bench(table_path: Path, kind: str = "ensemble", iterations: int = 2000, as_json: bool = False,
                     row_counts: tuple[int, ...] = ROW_COUNTS, rounds: int = ROUNDS) -> dict:
    """Decision latency per (prompt tokens x models), three ways: one prompt repeated (every cache
    warm), distinct prompts (the tokenizer's chunk memo in steady state: it holds the training table's
    words, as a gateway's does after some traffic; the prompts themselves are new) and cold (the memo
    emptied before each decision: a process's first requests); then distinct prompts at 500 tokens x
    10 models for routers trained on ``row_counts`` rows.

    Every cell's decisions are timed in ``rounds`` interleaved parts (all cells take a turn before any
    takes its next), so a slow spell of a shared machine, which lasts seconds, falls on every cell alike
    instead of on whichever cell ran then; percentiles are over all of a cell's decisions."""
    import os

    from threadpoolctl import threadpool_limits

    from .features import Featurizer
    from .router import Router
    from .table import load_table

    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    rounds = max(1, int(rounds))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    featurizer = Featurizer()
    load_s = time.perf_counter() - t0
    enc = featurizer.encoder
    table = load_table(table_path).clean()
    if len(table) < MIN_ROWS:  # Router.fit's minimum, said before any prompt is encoded
        raise ValueError(f"{table_path}: only {len(table)} usable rows (uncontaminated, fully graded); the "
                         f"benchmark routers are trained on it and need at least {MIN_ROWS}")
    X = featurizer.transform(table.prompts)
    base = table.prompts
    repeated = {n: _prompt_of_tokens(enc, base[:200], n) for n in TOKEN_TARGETS}
    n_distinct = max(50, iterations // 4)
    counts = [enc.count_tokens(t) + 1 for t in base]
    distinct = {n: _distinct_prompts(base, counts, n, n_distinct, offset=1000 + 7 * n) for n in TOKEN_TARGETS}
    results: dict = {
        "router": kind, "table": str(table_path), "training_rows": len(table), "encoder": enc.name,
        "encoder_load_s": round(load_s, 4), "distinct_prompts": n_distinct, "rounds": rounds, "cells": [], "rows": [],
        "load_average_1m": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    }
    log = (lambda *a: None) if as_json else print
    log(f"router={kind} trained on {len(table)} rows of {table_path}; one thread; {iterations} decisions per cell "
        f"repeated, {n_distinct} distinct prompts per cell; each cell timed in {rounds} interleaved rounds")
    log(f"load average {results['load_average_1m']} on {results['cpu_count']} cores (wall times include waits"
        " for the CPU on a busy machine; CPU columns are this thread's own time)")
    with threadpool_limits(limits=1):
        routers = {n: Router(kind, featurizer=featurizer).fit(_table_with_n_models(table, n), X=X, holdout=0.0)
                   for n in MODEL_COUNTS}
        cells = [(n_models, n_tok) for n_models in MODEL_COUNTS for n_tok in TOKEN_TARGETS]
        parts = {n_tok: {"repeated": _slices([repeated[n_tok]] * iterations, rounds),
                         "distinct": _slices(distinct[n_tok], rounds),
                         "cold": _slices(distinct[n_tok][: max(20, n_distinct // 5)], rounds)} for n_tok in TOKEN_TARGETS}
        timed = {cell: {"wall": [], "cpu": [], "distinct": [], "cold": []} for cell in cells}
        for r in range(rounds):
            for n_models, n_tok in cells:
                router, out = routers[n_models], timed[(n_models, n_tok)]
                for _ in range(50):  # warm caches
                    router.route(repeated[n_tok])
                wall, cpu = _time(router, parts[n_tok]["repeated"][r])
                out["wall"] += wall
                out["cpu"] += cpu
                out["distinct"] += _time(router, parts[n_tok]["distinct"][r])[0]
                out["cold"] += _time(router, parts[n_tok]["cold"][r], cold_encoder=enc)[0]
                enc.encode(base)  # back to the steady state the distinct prompts are timed in: the table's words known
        log(f"{'tokens':>7} {'models':>6} {'p50 ms':>8} {'p99 ms':>8} {'CPU p50':>8} {'distinct p50':>13} "
            f"{'distinct p99':>13} {'cold p50':>9} {'decisions/s':>12}")
        for n_models, n_tok in cells:
            out = timed[(n_models, n_tok)]
            p50, p99, mean = _percentiles(out["wall"])
            cpu50, cpu99, _ = _percentiles(out["cpu"])
            d50, d99, dmean = _percentiles(out["distinct"])
            c50, c99, _ = _percentiles(out["cold"])
            cell = {"tokens": n_tok, "models": n_models, "p50_ms": round(p50, 4), "p99_ms": round(p99, 4),
                    "mean_ms": round(mean, 4), "cpu_p50_ms": round(cpu50, 4), "cpu_p99_ms": round(cpu99, 4),
                    "distinct_p50_ms": round(d50, 4), "distinct_p99_ms": round(d99, 4),
                    "cold_p50_ms": round(c50, 4), "cold_p99_ms": round(c99, 4),
                    "decisions_per_s": round(1000.0 / dmean, 1)}
            results["cells"].append(cell)
            log(f"{n_tok:>7} {n_models:>6} {p50:>8.3f} {p99:>8.3f} {cpu50:>8.3f} {d50:>13.3f} {d99:>13.3f} "
                f"{c50:>9.3f} {cell['decisions_per_s']:>12.0f}")
        router = routers[MODEL_COUNTS[-1]]
        batch = table.prompts[:2000]  # batch throughput: offline evaluation / re-routing of logs
        s = time.perf_counter()
        router.route_batch(batch)
        results["batch_decisions_per_s"] = round(len(batch) / (time.perf_counter() - s), 1)
        log(f"batch routing ({MODEL_COUNTS[-1]} models, {len(batch)} prompts): "
            f"{results['batch_decisions_per_s']:.0f} decisions/s")
        t10 = _table_with_n_models(table, 10)
        sized, fit_s = {}, {}
        for n_rows in row_counts:
            tn, Xn = _table_with_n_rows(t10, X, n_rows)
            s = time.perf_counter()
            sized[n_rows] = Router(kind, featurizer=featurizer).fit(tn, X=Xn, holdout=0.0)
            fit_s[n_rows] = time.perf_counter() - s
        walls = {n_rows: [] for n_rows in row_counts}
        for r, texts in enumerate(_slices(distinct[500], rounds)):
            for n_rows in row_counts:
                for text in distinct[500][:20]:
                    sized[n_rows].route(text)
                walls[n_rows] += _time(sized[n_rows], texts)[0]
        log(f"{'training rows':>14} {'fit s':>7} {'distinct p50 ms':>16} {'p99 ms':>8}   (500 tokens, 10 models)")
        for n_rows in row_counts:
            p50, p99, _ = _percentiles(walls[n_rows])
            results["rows"].append({"rows": n_rows, "fit_s": round(fit_s[n_rows], 2), "distinct_p50_ms": round(p50, 4),
                                    "distinct_p99_ms": round(p99, 4)})
            log(f"{n_rows:>14,} {fit_s[n_rows]:>7.1f} {p50:>16.3f} {p99:>8.3f}")
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["rss_before_mb"] = round(rss0, 1)
    log(f"peak RSS: {results['peak_rss_mb']:.0f} MB (process incl. training data)")
    if as_json:
        print(json.dumps(results, indent=1))
    return results
