"""The overview's percentiles, exact, the way ``summarize()`` computes them (linear interpolation between the two ranks around
``(n - 1) * q``), in SQL without a percentile function (SQLite has none): the two values are read
with ``ORDER BY value LIMIT 2 OFFSET rank`` along an index in value order, from the low end or the
high end, whichever is nearer (p99 walks 1% of the index, p50 half of it).
"""

from __future__ import annotations

from typing import Any

from .sql import Reader, Scope

__all__ = ["latency", "route", "latency_counts", "without_route", "QUANTILES"]

QUANTILES = (0.5, 0.99)

# values of answered requests (what summarize's latency percentiles are over)
_ANSWERED = "status = 200 AND model IS NOT NULL AND model <> '' AND latency_ms IS NOT NULL"


def interpolated(reader: Reader, select: str, params: list[Any], value: str, n: int, q: float) -> float | None:
    """The ``q`` quantile of the ``n`` values ``select`` (``SELECT value FROM ... WHERE ...``) yields."""
    if n <= 0:
        return None
    k = (n - 1) * q
    lo = int(k)
    hi = min(lo + 1, n - 1)
    width = hi - lo + 1
    if lo <= n - 1 - hi:  # nearer the low end: walk up to rank lo
        got = [r[0] for r in reader.query(f"{select} ORDER BY {value} LIMIT ? OFFSET ?", [*params, width, lo])]
    else:  # nearer the high end: walk down to rank hi
        got = [r[0] for r in reader.query(f"{select} ORDER BY {value} DESC LIMIT ? OFFSET ?",
                                          [*params, width, n - 1 - hi])][::-1]
    if not got:  # the log changed under a query outside a snapshot
        return None
    a, b = float(got[0]), float(got[-1])
    return a + (b - a) * (k - lo)


def latency(reader: Reader, scope: Scope, n: int, q: float, model: str | None = None,
            index: str | None = None) -> float | None:
    """Latency quantile of the answered requests in ``scope`` (of one ``model`` if given); ``n`` is
    how many there are (from the overview's grouped counts, read in the same snapshot)."""
    where, params = scope.where()
    if model is not None:
        where += " AND model = ?"
        params.append(model)
    hint = reader.index(index or ("requests_model_latency" if model is not None else "requests_latency"))
    return interpolated(reader, f"SELECT latency_ms FROM requests{hint} WHERE {_ANSWERED} AND {where}",
                        params, "latency_ms", n, q)


def route(reader: Reader, scope: Scope, n: int, q: float, index: str | None = None) -> float | None:
    """Routing-time quantile over the requests in ``scope`` with a routing time (summarize: ``if route_ms``)."""
    where, params = scope.where()
    hint = reader.index(index or "requests_route")
    return interpolated(reader, f"SELECT route_ms FROM requests{hint} WHERE route_ms <> 0 AND {where}",
                        params, "route_ms", n, q)


def _count(reader: Reader, scope: Scope, index: str, condition: str = "", group: str = "") -> list[tuple]:
    """``COUNT(*)`` of the requests in scope meeting ``condition`` (per ``group`` if given)."""
    where, params = scope.where()
    if condition:
        where = f"{condition} AND {where}"
    select, tail = (f"{group}, COUNT(*)", f" GROUP BY {group}") if group else ("COUNT(*)", "")
    return reader.query(f"SELECT {select} FROM requests{reader.index(index)} WHERE {where}{tail}", params)


def latency_counts(reader: Reader, scope: Scope, answered: dict[str, int]) -> dict[str, int]:
    """Per model, how many answered requests have a latency: ``answered`` (from the traffic series)
    less the rare NULLs (a seek to the front of ``requests_latency``)."""
    nulls = dict(_count(reader, scope, "requests_latency", "status = 200 AND latency_ms IS NULL", "model"))
    return {m: n - int(nulls.get(m, 0)) for m, n in answered.items()}


def without_route(reader: Reader, scope: Scope) -> int:
    """Requests in scope without a routing time (NULL or 0: two seeks to the front of ``requests_route``)."""
    return sum(int(_count(reader, scope, "requests_route", c)[0][0]) for c in ("route_ms IS NULL", "route_ms = 0"))
