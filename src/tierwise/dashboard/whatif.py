"""The knob what-if: what the logged requests would have cost, where they would have gone and how
good the router predicted them to be, at other knobs.

Every routed request of the range is decided again, by the router's own rule
(:func:`tierwise.decision.choose`), from its logged per-model scores and per-model cost estimates:
``tokens_in x input price + tokens_out x output price`` from the pyramid's prices, relative to the
dearest model's estimate for that request. Only the answering model's ``tokens_out`` is known, so it
stands in for every model's. Requests that were not routed (a model named directly, the cascade,
the forwarded endpoints) keep their logged cost at every knob.

This is the one page that must visit each request (a counterfactual per request), so it streams the
numeric columns (the JSON taken apart in SQL) in chunks and keeps only per-knob sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..decision import choose, knob_grid
from .sql import Reader, Scope, answered, routed

__all__ = ["Tier", "whatif", "config_line"]

GRID_POINTS = 64


@dataclass(frozen=True)
class Tier:
    """A pyramid model as the what-if prices it (cheapest first)."""

    name: str
    input_per_1m: float
    output_per_1m: float


def knobs_for(rule: str, current: float | None) -> list[float]:
    """The slider's stops, ascending: the rule's sweep (finite part) with the current knob in it."""
    grid = {float(k) for k in knob_grid(rule, GRID_POINTS) if math.isfinite(k)}
    if current is not None and math.isfinite(current):
        grid.add(float(current))
    return sorted(grid)


def config_line(rule: str, knob: float) -> dict[str, str]:
    """How to run at ``knob``: the pyramid YAML line(s) and the per-request model name."""
    k = f"{knob:.4g}"
    yaml = f"knob: {k}" if rule == "cost_weight" else f"rule: threshold\nknob: {k}"
    return {"yaml": yaml, "model": f"tierwise:{k}"}


class _Sums:
    """Per-knob totals over the chunks."""

    def __init__(self, knobs: Sequence[float], m: int):
        self.spend = np.zeros(len(knobs))
        self.quality = np.zeros(len(knobs))
        self.mix = np.zeros((len(knobs), m))
        self.single_spend = np.zeros(m)
        self.single_quality = np.zeros(m)
        self.single_rows = np.zeros(m)
        self.rows = 0
        self.actual_spend = 0.0
        self.actual_quality = 0.0
        self.actual_scored = 0
        self.actual_mix = np.zeros(m)
        self.agree = self.compared = 0


# columns of the streamed query before the per-model scores
_TIN, _TOUT, _COST, _MODEL, _CHOSEN, _KNOB, _RULE = range(7)
_SCORES = 7


def _chunk(sums: _Sums, rows: list[tuple], names: list[str], pin: np.ndarray, pout: np.ndarray,
           knobs: Sequence[float], rule: str) -> None:
    a = np.array([r[_SCORES:] for r in rows], dtype=float).reshape(len(rows), len(names))
    allowed = ~np.isnan(a)
    keep = allowed.any(axis=1)  # requests scored for none of these models stay at their logged cost
    if not keep.all():
        a, allowed, rows = a[keep], allowed[keep], [r for r, k in zip(rows, keep) if k]
    if not rows:
        return
    q = np.nan_to_num(a, nan=0.0)
    tin = np.array([r[_TIN] or 0 for r in rows], dtype=float)
    tout = np.array([r[_TOUT] or 0 for r in rows], dtype=float)
    cost = (tin[:, None] * pin + tout[:, None] * pout) / 1e6
    top = cost.max(axis=1, keepdims=True)
    rel = cost / np.where(top > 0, top, 1.0)  # each request's costs relative to its dearest model's
    at = np.arange(len(rows))
    for i, k in enumerate(knobs):
        pick = choose(q, rel, rule, k, allowed)
        sums.spend[i] += cost[at, pick].sum()
        sums.quality[i] += q[at, pick].sum()
        sums.mix[i] += np.bincount(pick, minlength=len(names))
    sums.single_spend += cost.sum(axis=0)
    sums.single_quality += q.sum(axis=0)
    sums.single_rows += allowed.sum(axis=0)
    sums.rows += len(rows)
    index = {n: j for j, n in enumerate(names)}
    model = np.array([index.get(r[_MODEL], -1) for r in rows])
    sums.actual_spend += float(sum(r[_COST] or 0.0 for r in rows))
    sums.actual_mix += np.bincount(model[model >= 0], minlength=len(names))
    scored = (model >= 0) & allowed[at, np.maximum(model, 0)]
    sums.actual_quality += float(q[at[scored], model[scored]].sum())
    sums.actual_scored += int(scored.sum())
    _agreement(sums, rows, q, rel, allowed, index, rule)


def _agreement(sums: _Sums, rows: list[tuple], q: np.ndarray, rel: np.ndarray, allowed: np.ndarray,
               index: dict[str, int], rule: str) -> None:
    """Re-decide each request at its own logged knob (same rule): how often the logged choice comes back."""
    chosen = np.array([index.get(r[_CHOSEN], -1) for r in rows])
    knob = np.array([float(r[_KNOB]) if r[_KNOB] is not None and r[_RULE] == rule else np.nan for r in rows])
    ok = (chosen >= 0) & ~np.isnan(knob)
    for k in np.unique(knob[ok]):
        sel = ok & (knob == k)
        pick = choose(q[sel], rel[sel], rule, float(k), allowed[sel])
        sums.agree += int((pick == chosen[sel]).sum())
        sums.compared += int(sel.sum())


def whatif(reader: Reader, scope: Scope, tiers: Sequence[Tier], rule: str, current: float | None) -> dict[str, Any]:
    """The curve, the current knob's point and what the log actually did, for ``scope``."""
    names = [t.name for t in tiers]
    pin = np.array([t.input_per_1m for t in tiers])
    pout = np.array([t.output_per_1m for t in tiers])
    knobs = knobs_for(rule, current)
    sums = _Sums(knobs, len(names))
    where, params = scope.where()
    scored = ", ".join(reader.json_number("scores", "?") for _ in names)
    select = (f"SELECT tokens_in, tokens_out, cost_usd, model, chosen, knob, rule, {scored} FROM requests "
              f"WHERE {where} AND {routed()} AND scores NOT IN ('{{}}', '') AND cascade_chain IS NULL")
    with reader.snapshot():
        for rows in reader.chunks(select, [*names, *params]):
            _chunk(sums, rows, names, pin, pout, knobs, rule)
        (spend_all, n_answered), = reader.query(
            f"SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM requests WHERE {where} AND {answered()}", params)
    return _result(sums, names, knobs, rule, current, float(spend_all), int(n_answered))


def _result(sums: _Sums, names: list[str], knobs: list[float], rule: str, current: float | None,
            spend_all: float, n_answered: int) -> dict[str, Any]:
    fixed = spend_all - sums.actual_spend  # answered but not re-decided: kept at their logged cost
    n = max(sums.rows, 1)

    def mix(counts: np.ndarray) -> dict[str, float]:
        return {m: float(c) / n for m, c in zip(names, counts)}

    points = [{"knob": k, "spend_usd": fixed + float(sums.spend[i]), "redecided_spend_usd": float(sums.spend[i]),
               "quality": float(sums.quality[i]) / n if sums.rows else None, "mix": mix(sums.mix[i]),
               **config_line(rule, k)} for i, k in enumerate(knobs)]
    singles = [{"model": m, "spend_usd": fixed + float(sums.single_spend[j]),
                "quality": float(sums.single_quality[j] / sums.single_rows[j]) if sums.single_rows[j] else None}
               for j, m in enumerate(names)]
    return {
        "rule": rule, "knobs": knobs, "models": names, "points": points, "singles": singles,
        "current_knob": current, "current_index": knobs.index(float(current)) if current in knobs else None,
        "actual": {"spend_usd": spend_all, "redecided_spend_usd": sums.actual_spend, "mix": mix(sums.actual_mix),
                   "quality": sums.actual_quality / sums.actual_scored if sums.actual_scored else None},
        "requests": {"redecided": sums.rows, "answered": n_answered, "kept": n_answered - sums.rows,
                     "kept_spend_usd": fixed},
        "agreement": {"compared": sums.compared, "same": sums.agree,
                      "rate": sums.agree / sums.compared if sums.compared else None},
        "estimate": "Costs of models that did not answer a request are estimated with that request's "
                    "tokens_in and the answering model's tokens_out, at the pyramid's prices.",
    }
