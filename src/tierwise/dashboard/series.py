"""Time series in SQL without sorting the log: one row per (bucket, model) whose values are
correlated subqueries over an index range (``model = ? AND ts`` in a bucket), so the database
walks each request's index entry once and never builds a temporary sort of the range.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .sql import Reader, Scope

__all__ = ["bucket_step", "bucket_starts", "traffic"]

# bucket widths a chart may use, in seconds (the smallest giving at most MAX_BUCKETS buckets wins)
STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 200


def bucket_step(t0: float, t1: float, max_buckets: int = MAX_BUCKETS) -> int:
    span = max(t1 - t0, 1.0)
    for step in STEPS:
        if span / step <= max_buckets:
            return step
    return int(math.ceil(span / max_buckets / 86400.0)) * 86400


def bucket_starts(t0: float, t1: float, step: int) -> list[float]:
    first = math.floor(t0 / step) * step
    return [float(first + i * step) for i in range(int(math.ceil((t1 - first) / step)))]


def _buckets_cte(starts: list[float], step: int) -> tuple[str, list[Any]]:
    """A recursive CTE ``b(s)`` of bucket starts (no parameter per bucket)."""
    return ("b(s) AS (SELECT CAST(? AS DOUBLE PRECISION) UNION ALL SELECT s + ? FROM b WHERE s + ? < ?)",
            [starts[0], step, step, starts[-1] + step / 2])


def _counts(reader: Reader, scope: Scope, step: int, starts: list[float], match: str,
            models: Sequence[str] = ()) -> list[tuple]:
    """``(bucket start, [model,] count)`` rows: requests matching ``match`` (SQL on alias ``r``; with
    ``models``, ``m.name`` is each of them) per bucket, counted along ``requests_model_ts``."""
    cte, params = _buckets_cte(starts, step)
    where, scope_params = scope.where("r")
    with_models = f", m(name) AS (VALUES {', '.join('(?)' for _ in models)})" if models else ""
    sql = (f"WITH RECURSIVE {cte}{with_models} SELECT b.s{', m.name' if models else ''}, "
           f"(SELECT COUNT(*) FROM requests r{reader.index('requests_model_ts')} WHERE {match} "
           f"AND r.ts >= b.s AND r.ts < b.s + ? AND {where}) FROM b{', m' if models else ''}")
    return reader.query(sql, [*params, *models, step, *scope_params])


def traffic(reader: Reader, scope: Scope, models: Sequence[str], step: int) -> dict[str, Any]:
    """Per bucket: answered requests per model, and requests no model answered (errors)."""
    starts = bucket_starts(scope.t0, scope.t1, step)
    index = {s: i for i, s in enumerate(starts)}
    answered = {m: [0] * len(starts) for m in models}
    unanswered = [0] * len(starts)
    if starts and models:
        for s, name, n in _counts(reader, scope, step, starts, "r.model = m.name AND r.status = 200", models):
            if float(s) in index:  # (the range is bounded by the API, so every bucket is one of ours)
                answered[name][index[float(s)]] = int(n)
    if starts:
        for s, n in _counts(reader, scope, step, starts, "r.model IS NULL"):
            if float(s) in index:
                unanswered[index[float(s)]] = int(n)
    return {"step": step, "starts": starts, "models": answered, "unanswered": unanswered}
