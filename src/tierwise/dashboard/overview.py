"""The overview: traffic, spend, savings, latency, failure rates.

``stats`` holds exactly the numbers ``tierwise stats --json`` prints (``decision_log.summarize``)
for the same requests, computed in the database by two groups of queries that run side by side on
two connections, each group in one snapshot, so the counts a percentile's ranks come from and the
walk along its index agree: the grouped sums with the cascades and the routing-time percentiles
(whose count is the sums' total), and the traffic series with the latency percentiles (whose counts
are the series' totals per model), the fallbacks and the models' mean predicted quality.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from typing import Any, Mapping

from ..prices import token_cost
from . import percentiles, series, totals
from .percentiles import QUANTILES
from .sql import FORWARDED, Reader, Scope, is_small, time_index

__all__ = ["overview", "stats"]


def stats(groups: list[dict[str, Any]], fb: dict[str, Any], casc: dict[str, Any], pct: dict[str, Any],
          prices: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """``summarize()``'s numbers from the aggregates (same keys, same definitions), plus the routed
    answers' token totals and cost (``_answer_tokens``, ``_routed_cost``) for the other baselines."""
    ok = [g for g in groups if g["ok"]]
    answered = sum(g["requests"] for g in ok)
    models: dict[str, dict[str, Any]] = {}
    for g in ok:
        m = models.setdefault(g["model"], {"requests": 0, "cost_usd": 0.0, "tokens_in": 0, "tokens_out": 0})
        for k in ("requests", "cost_usd", "tokens_in", "tokens_out"):
            m[k] += g[k]
    for m in models.values():
        m["share"] = m["requests"] / answered
    status: dict[str, int] = {}
    surfaces: dict[str, int] = {}
    for g in groups:
        status[str(g["status"])] = status.get(str(g["status"]), 0) + g["requests"]
        surfaces[g["surface"]] = surfaces.get(g["surface"], 0) + g["requests"]
    routed = [g for g in ok if g["surface"] not in FORWARDED]
    answered_cost = math.fsum(g["cost_usd"] for g in ok)
    unanswered_cost = math.fsum(g["cost_usd"] for g in groups if not g["ok"])
    routed_cost = math.fsum(g["cost_usd"] for g in routed)
    tin = sum(g["tokens_in"] for g in routed) + casc["baseline_tokens_delta"][0]
    tout = sum(g["tokens_out"] for g in routed) + casc["baseline_tokens_delta"][1]
    unpriced = sorted({g["model"] for g in routed} - set(prices))
    biggest = max(prices, key=lambda k: prices[k][0] + prices[k][1]) if prices and not unpriced else None
    baseline = None if biggest is None else token_cost(tin, tout, *prices[biggest])
    return {
        "requests": sum(g["requests"] for g in groups), "answered": answered, "status": status,
        "surfaces": dict(sorted(surfaces.items(), key=lambda kv: -kv[1])),
        "models": dict(sorted(models.items(), key=lambda kv: -kv[1]["requests"])),
        "fallback_requests": fb["requests"], "fallbacks": fb["fallbacks"],
        "latency_ms_p50": pct["latency"][0.5], "latency_ms_p99": pct["latency"][0.99],
        "route_ms_p50": pct["route"][0.5], "route_ms_p99": pct["route"][0.99],
        "cost_usd": answered_cost + unanswered_cost, "forwarded_cost_usd": answered_cost - routed_cost,
        "unanswered_cost_usd": unanswered_cost, "unpriced_models": unpriced,
        "baseline_model": biggest, "baseline_cost_usd": baseline,
        "saved_usd": None if baseline is None else baseline - routed_cost,
        "saved_fraction": None if not baseline else (baseline - routed_cost) / baseline,
        "_answer_tokens": (tin, tout), "_routed_cost": routed_cost,
    }


def _sums(reader: Reader, scope: Scope) -> dict[str, Any]:
    with reader.snapshot():
        small = is_small(reader, scope)
        groups = totals.groups(reader, scope, small)
        n_route = sum(g["requests"] for g in groups) - percentiles.without_route(reader, scope)
        index = time_index(scope) if small else None
        return {"groups": groups, "cascade": totals.cascade(reader, scope),
                "route": {q: percentiles.route(reader, scope, n_route, q, index=index) for q in QUANTILES}}


def _ranks(reader: Reader, scope: Scope, step: int, tiers: list[str]) -> dict[str, Any]:
    with reader.snapshot():
        traffic = series.traffic(reader, scope, reader.distinct("model"), step)
        traffic["models"] = {m: v for m, v in traffic["models"].items() if any(v)}
        n = percentiles.latency_counts(reader, scope, {m: sum(v) for m, v in traffic["models"].items()})
        index = time_index(scope) if is_small(reader, scope) else None
        return {"series": traffic, "fallbacks": totals.fallbacks(reader, scope),
                "predicted": totals.predicted_quality(reader, scope, tiers),
                "latency": {q: percentiles.latency(reader, scope, sum(n.values()), q, index=index) for q in QUANTILES},
                "per_model": {m: {q: percentiles.latency(reader, scope, k, q, model=m, index=index) for q in QUANTILES}
                              for m, k in n.items()}}


def overview(reader: Reader, scope: Scope, prices: Mapping[str, tuple[float, float]],
             breakers: Mapping[str, Any] | None = None, pool: Executor | None = None) -> dict[str, Any]:
    """Everything the overview page shows, for the requests in ``scope`` (``pool``: run the two
    query groups on two of its threads; without it, one after the other)."""
    step = series.bucket_step(scope.t0, scope.t1)
    if pool is None:
        sums, ranks = _sums(reader, scope), _ranks(reader, scope, step, list(prices))
    else:
        later = pool.submit(_ranks, reader, scope, step, list(prices))
        sums, ranks = _sums(reader, scope), later.result()
    s = stats(sums["groups"], ranks["fallbacks"], sums["cascade"], {**ranks, "route": sums["route"]}, prices)
    return _assemble(s, sums, ranks, prices, breakers)


def _assemble(s: dict[str, Any], sums: dict[str, Any], ranks: dict[str, Any],
              prices: Mapping[str, tuple[float, float]], breakers: Mapping[str, Any] | None) -> dict[str, Any]:
    tin, tout = s.pop("_answer_tokens")
    routed_cost = s.pop("_routed_cost")
    fb, casc, best, per_model = ranks["fallbacks"], sums["cascade"], ranks["predicted"], ranks["per_model"]
    means = best.get("mean_predicted_quality") or {}
    # (no baseline either when the log's models have no price here: s["unpriced_models"])
    best_model = (max(means, key=lambda m: (means[m], -list(prices).index(m)))
                  if means and not s["unpriced_models"] else None)
    best_cost = None if best_model is None else token_cost(tin, tout, *prices[best_model])
    n = s["requests"] or 1
    models = []
    for name, m in s["models"].items():
        lat = per_model.get(name, {})
        models.append({"model": name, **m, "latency_ms_p50": lat.get(0.5), "latency_ms_p99": lat.get(0.99),
                       "failed_over": fb["failed"].get(name, {}),
                       "breaker": None if breakers is None else breakers.get(name)})
    for name in prices:
        if name not in s["models"] and breakers is not None and name in breakers:
            models.append({"model": name, "requests": 0, "share": 0.0, "cost_usd": 0.0, "breaker": breakers[name],
                           "failed_over": fb["failed"].get(name, {})})
    return {
        "stats": s,
        "best_single": {"model": best_model, "cost_usd": best_cost, "sample": best.get("sample", 0),
                        "mean_predicted_quality": means,
                        "saved_usd": None if best_cost is None else best_cost - routed_cost,
                        "saved_fraction": None if not best_cost else (best_cost - routed_cost) / best_cost},
        "rates": {"error": (s["requests"] - s["answered"]) / n, "fallback": s["fallback_requests"] / n,
                  "cascade": casc["requests"] / n,
                  "cascade_escalation": casc["escalated"] / casc["requests"] if casc["requests"] else None},
        "cascade": {k: v for k, v in casc.items() if k != "baseline_tokens_delta"},
        "models": models, "series": ranks["series"], "breakers": breakers,
    }
