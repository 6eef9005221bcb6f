"""The field's routing metrics, defined exactly as the papers that introduced them.

Two models (RouteLLM, Ong et al. 2024, ``routellm/evals``):
  * a router gives each prompt a *strong-win score*; thresholds at the 0,10,...,100th percentiles
    of those scores (``pd.qcut(scores, 10)`` bins) give 11 operating points (share of calls to the
    strong model, accuracy);
  * PGR(x) = (acc(x) - acc_weak) / (acc_strong - acc_weak);
  * APGR = trapezoid area under accuracy over strong-call share, normalised the same way;
  * CPT(p%) = share of strong calls needed to reach PGR = p% (RouteLLM uses ``np.interp`` on the
    curve; we take the first crossing of the piecewise-linear curve, identical when it is monotone).

N models (RouterBench, Hu et al. 2024):
  * a router swept over its cost knob gives (mean cost, mean quality) points; mixing two operating
    points at random is always possible, so what a router *offers* is the non-decreasing upper
    convex hull of its points;
  * AIQ = area under that hull over [c_min, c_max] / (c_max - c_min), with c_min/c_max the cheapest
    and dearest single model's mean cost (a common range, so routers are comparable);
  * the *zero router* is the hull of the single models alone: a router must beat it to be worth
    anything; the *oracle* knows every outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decision import choose, knob_grid

# --------------------------------------------------------------------------- two models (RouteLLM)


def routellm_curve(
    strong_score: np.ndarray, weak_correct: np.ndarray, strong_correct: np.ndarray, num_results: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(strong-call share in %, accuracy) at RouteLLM's quantile thresholds, sorted by share."""
    s = np.asarray(strong_score, dtype=float)
    w = np.asarray(weak_correct, dtype=float)
    st = np.asarray(strong_correct, dtype=float)
    thresholds = np.quantile(s, np.linspace(0.0, 1.0, num_results + 1))
    pct, acc = [], []
    for i, t in enumerate(thresholds):
        sel = s >= t if i != len(thresholds) - 1 else s > t
        pct.append(sel.mean() * 100.0)
        acc.append(np.where(sel, st, w).mean())
    pct_a, acc_a = np.array(pct), np.array(acc)
    order = np.argsort(pct_a, kind="stable")
    return pct_a[order], acc_a[order]


def _trapz(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def apgr(strong_score, weak_correct, strong_correct, num_results: int = 10) -> float:
    """Average performance gap recovered (RouteLLM). 0.5 is a random router, 1.0 is perfect-ish."""
    pct, acc = routellm_curve(strong_score, weak_correct, strong_correct, num_results)
    w, s = float(np.mean(weak_correct)), float(np.mean(strong_correct))
    if s == w:
        return float("nan")
    x = pct / 100.0
    auc = _trapz(acc, x)
    span = x[-1] - x[0]
    return (auc - w * span) / ((s - w) * span)


def cpt(strong_score, weak_correct, strong_correct, pgr: float, num_results: int = 10) -> float:
    """Call-performance threshold: % of strong calls needed to recover ``pgr`` of the gap."""
    pct, acc = routellm_curve(strong_score, weak_correct, strong_correct, num_results)
    w, s = float(np.mean(weak_correct)), float(np.mean(strong_correct))
    target = w + pgr * (s - w)
    return _first_crossing(pct, acc, target)


def _first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    if y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target:
            if y[i] == y[i - 1]:
                return float(x[i])
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return float(x[-1])


def pair_metrics(strong_score, weak_correct, strong_correct) -> dict[str, float | None]:
    """APGR and CPT(50/80/95%); all None when the dearer model is not better (no gap to recover)."""
    if not np.mean(strong_correct) - np.mean(weak_correct) > 1e-12:
        return {"apgr": None, "cpt50": None, "cpt80": None, "cpt95": None}
    return {
        "apgr": apgr(strong_score, weak_correct, strong_correct),
        "cpt50": cpt(strong_score, weak_correct, strong_correct, 0.50),
        "cpt80": cpt(strong_score, weak_correct, strong_correct, 0.80),
        "cpt95": cpt(strong_score, weak_correct, strong_correct, 0.95),
    }


# --------------------------------------------------------------------------- N models (RouterBench)


def upper_hull(points: np.ndarray) -> np.ndarray:
    """Non-decreasing upper convex hull of (cost, quality) points, sorted by cost."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.lexsort((-pts[:, 1], pts[:, 0]))]
    hull: list[np.ndarray] = []
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            continue  # same cost, lower quality (sorted best first)
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point if it lies on or under the chord
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    h = np.array(hull)
    best = int(np.argmax(h[:, 1]))
    return h[: best + 1]  # past the best point, paying more buys nothing: the curve stays flat


def hull_quality(hull: np.ndarray, cost: float | np.ndarray) -> np.ndarray:
    """Quality the hull offers at a budget (flat beyond its ends)."""
    return np.interp(cost, hull[:, 0], hull[:, 1], left=hull[0, 1], right=hull[-1, 1])


def aiq(hull: np.ndarray, c_min: float, c_max: float, grid: int = 2001) -> float:
    """Average improvement in quality (RouterBench): mean hull quality over [c_min, c_max]."""
    if c_max <= c_min:
        return float(hull[-1, 1])
    xs = np.linspace(c_min, c_max, grid)
    return _trapz(hull_quality(hull, xs), xs) / (c_max - c_min)


def cost_to_reach(hull: np.ndarray, quality: float) -> float | None:
    """Least mean cost at which the hull reaches ``quality`` (None if it never does)."""
    if hull[-1, 1] < quality - 1e-12:
        return None
    return _first_crossing(hull[:, 0], hull[:, 1], quality)


@dataclass
class Curve:
    """Operating points of one router: per knob value, mean cost, mean quality, share of top model."""

    knobs: np.ndarray
    cost: np.ndarray
    quality: np.ndarray
    top_share: np.ndarray

    def points(self) -> np.ndarray:
        return np.column_stack([self.cost, self.quality])


def router_picks(predicted: np.ndarray, decision_cost: np.ndarray, rule: str, knobs: np.ndarray,
                 scale: float | None = None) -> np.ndarray:
    """(knobs, n) model index per knob value and row: the decision rule swept over its knob."""
    return np.stack([choose(predicted, decision_cost, rule, k, scale=scale) for k in knobs])


def curve_of_picks(knobs: np.ndarray, picks: np.ndarray, correct: np.ndarray, cost: np.ndarray) -> Curve:
    """Mean realised cost, quality and top-model share of (knobs, n) picks."""
    rows = np.arange(len(correct))
    top = int(np.argmax(cost.mean(axis=0)))
    return Curve(np.asarray(knobs), cost[rows, picks].mean(axis=1), correct[rows, picks].mean(axis=1),
                 (picks == top).mean(axis=1))


def router_curve(
    predicted: np.ndarray, correct: np.ndarray, cost: np.ndarray, rule: str = "cost_weight", knobs: np.ndarray | None = None,
    *, decision_cost: np.ndarray | None = None, scale: float | None = None,
) -> Curve:
    """Sweep a decision rule's knob over out-of-fold predictions and measure the real outcomes.

    ``cost`` is the realised (n, m) cost every point is measured with; ``decision_cost`` is the cost the
    rule decides with ((m,) per model or (n, m) predicted per request; default ``cost`` itself, which only
    an oracle knows).
    """
    knobs = knob_grid(rule) if knobs is None else np.asarray(knobs)
    decide = cost if decision_cost is None else decision_cost
    return curve_of_picks(knobs, router_picks(predicted, decide, rule, knobs, scale), correct, cost)


def single_model_points(correct: np.ndarray, cost: np.ndarray) -> np.ndarray:
    return np.column_stack([cost.mean(axis=0), correct.mean(axis=0)])


def oracle_curve(correct: np.ndarray, cost: np.ndarray) -> Curve:
    """A router that knows every outcome: the ceiling any learned router is measured against."""
    return router_curve(correct, correct, cost, "cost_weight")


def nmodel_metrics(curve_points: np.ndarray, correct: np.ndarray, cost: np.ndarray, budgets=(0.1, 0.25, 0.5)) -> dict:
    """AIQ, cost to match the best single model (as a fraction of its cost), and quality at budgets."""
    singles = single_model_points(correct, cost)
    c_min, c_max = singles[:, 0].min(), singles[:, 0].max()
    # best single model: highest quality, the cheaper one on ties
    best = int(np.lexsort((singles[:, 0], -singles[:, 1]))[0])
    best_cost, best_q = singles[best]
    hull = upper_hull(curve_points)
    reach = cost_to_reach(hull, best_q)
    out = {
        "aiq": aiq(hull, c_min, c_max),
        "cost_to_match_best": None if reach is None else reach / best_cost,
        "max_quality": float(hull[-1, 1]),
    }
    for b in budgets:
        out[f"quality_at_{int(round(b * 100))}pct_cost"] = float(hull_quality(hull, b * best_cost))
    return out
