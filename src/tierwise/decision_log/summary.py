"""``tierwise stats``: traffic, fallbacks, latency and money saved, from the decision log's rows."""

from __future__ import annotations

from typing import Any

from ..prices import token_cost


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _answer_tokens(row: dict[str, Any]) -> tuple[int, int]:
    """Tokens of the answer the client got: the kept model's own for a cascade row, else the row's."""
    for step in row.get("cascade_chain") or ():
        if step.get("outcome") == "kept" and step.get("tokens_in") is not None:
            return int(step["tokens_in"] or 0), int(step.get("tokens_out") or 0)
    return int(row["tokens_in"] or 0), int(row["tokens_out"] or 0)


def summarize(rows: list[dict[str, Any]], prices: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Traffic share, fallbacks, latency and money saved versus always using the priciest model.

    ``prices``: model -> (USD per 1M input tokens, USD per 1M output tokens), from the pyramid. The
    baseline re-prices every answered request's logged token counts at the priciest model's rates
    (token counts differ a little between tokenizers; the log has the answering model's counts).
    A cascade row's tokens and cost are totals over every model it called; its baseline uses only
    the kept answer's tokens (from ``cascade_chain``), as the priciest model would have been asked once.
    Requests to the forwarded endpoints (``/v1/embeddings``, ``/v1/completions``: one named model,
    never routed) count in the traffic and the total cost but not in the baseline or the savings
    (``forwarded_cost_usd`` is their spend).

    ``cost_usd`` is every logged request's spend, answered or not: a request that failed after paying
    for model calls (a cascade whose last model failed, a stream cut mid-answer) cost money too, and
    budgets charge it. That part is ``unanswered_cost_usd``; the savings compare the answered routed
    requests' spend with their baseline. ``unpriced_models``: models of answered routed requests that
    ``prices`` does not have (the prices are another pyramid's); then there is no baseline (None)
    rather than one made of the wrong prices.
    """
    ok = [r for r in rows if r["status"] == 200 and r["model"]]
    routed = [r for r in ok if (r.get("surface") or "chat") not in ("embeddings", "completions")]
    by_model: dict[str, dict[str, Any]] = {}
    for r in ok:
        m = by_model.setdefault(r["model"], {"requests": 0, "cost_usd": 0.0, "tokens_in": 0, "tokens_out": 0})
        m["requests"] += 1
        m["cost_usd"] += r["cost_usd"] or 0.0
        m["tokens_in"] += r["tokens_in"] or 0
        m["tokens_out"] += r["tokens_out"] or 0
    for m in by_model.values():
        m["share"] = m["requests"] / len(ok)
    unpriced = sorted({r["model"] for r in routed} - set(prices))
    biggest = max(prices, key=lambda k: (prices[k][0] + prices[k][1])) if prices and not unpriced else None
    answered_cost = sum(r["cost_usd"] or 0.0 for r in ok)
    unanswered_cost = sum(r["cost_usd"] or 0.0 for r in rows if not (r["status"] == 200 and r["model"]))
    total = answered_cost + unanswered_cost
    routed_cost = sum(r["cost_usd"] or 0.0 for r in routed)
    baseline = None
    if biggest is not None:
        pin, pout = prices[biggest]
        baseline = sum(token_cost(tin, tout, pin, pout) for tin, tout in map(_answer_tokens, routed))
    lat = [float(r["latency_ms"]) for r in ok if r["latency_ms"] is not None]
    route = [float(r["route_ms"]) for r in rows if r["route_ms"]]
    statuses: dict[str, int] = {}
    surfaces: dict[str, int] = {}
    for r in rows:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        surface = r.get("surface") or "chat"
        surfaces[surface] = surfaces.get(surface, 0) + 1
    return {
        "requests": len(rows),
        "answered": len(ok),
        "status": statuses,
        "surfaces": dict(sorted(surfaces.items(), key=lambda kv: -kv[1])),  # requests per API (chat, responses, ...)
        "models": dict(sorted(by_model.items(), key=lambda kv: -kv[1]["requests"])),
        "fallback_requests": sum(1 for r in rows if r["fallbacks"]),
        "fallbacks": sum(len(r["fallbacks"]) for r in rows),
        "latency_ms_p50": _percentile(lat, 0.5),
        "latency_ms_p99": _percentile(lat, 0.99),
        "route_ms_p50": _percentile(route, 0.5),
        "route_ms_p99": _percentile(route, 0.99),
        "cost_usd": total,
        "forwarded_cost_usd": answered_cost - routed_cost,  # embeddings + legacy completions: not in the baseline
        "unanswered_cost_usd": unanswered_cost,  # spent on requests that got no answer: not in the baseline
        "unpriced_models": unpriced,
        "baseline_model": biggest,
        "baseline_cost_usd": baseline,
        "saved_usd": None if baseline is None else baseline - routed_cost,
        "saved_fraction": None if not baseline else (baseline - routed_cost) / baseline,
    }
