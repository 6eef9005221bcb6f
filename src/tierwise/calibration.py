"""The hull guard: a deployed router is never worse than mixing two single models.

Sending each request at random to one of two single models, in a fixed ratio, reaches every point of
the segment between them; so the convex hull of the single models' (mean cost, quality) points, the
*zero router*, is on offer without any learning. Where a learned router's out-of-fold curve falls
under that hull at some knob, serving the hull's mixture there is better at the same cost.

:meth:`HullGuard.fit` compares, knob by knob, the router's out-of-fold operating point with the zero
router at the same mean cost (a paired comparison on the same rows), and guards every knob where the
router is not ahead by at least ``margin_se`` standard errors. The zero router it compares with is
cross-fitted (:class:`CrossFitZeroRouter`: each fold served by the hull of the others), and a knob
is guarded only where every fold's hull would mix the same two models: on a small table the hull's
vertices are partly the models that were lucky on its rows, and a mixture of them can be under the
zero router of future traffic (``bench/guard_small_tables.py``). At a guarded knob a request goes to the
dearer of the two hull neighbours with probability ``p`` (the hull's mixing ratio at the router's
cost), else to the cheaper one; the coin is a hash of the request id or the prompt (:func:`draw`), so
a decision is reproducible. Past the best single model the hull is flat: a guarded knob there serves
the best model alone (``p = 1``). The "best quality" end of the knob (cost weight 0, or a threshold
no model clears) is compared with the best single model itself: where the router's best picks are
not better than always calling that model, it is served alone, so the deployed curve reaches the
best model's quality whenever the zero router does.

:func:`crossfit_rows` is the honest evaluation of the whole procedure: each fold's rows are routed by
a guard fitted on the other folds only; :func:`under_zero` counts knobs where a curve is
significantly (paired, ``z`` standard errors) under the zero router.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .metrics import Curve, hull_quality, single_model_points, upper_hull

# 1.25: the smallest of 1, 1.25, 1.5 with no knob under the zero router on any shipped table out of fold
# (bench/router_quality.py; at 1.0 one knob of kNN on mmlu_pro was 0.003 under, by 2 SEs). On future traffic
# after a small table (bench/guard_small_tables.py --margin-se), 0.5 and 0 helped llmrouter_dc at 400 rows and
# hurt mmlu_pro at 800
DEFAULT_MARGIN_SE = 1.25
ZERO_ROUTER_FOLDS = 5  # the zero router a guard compares with is cross-fitted over this many folds


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Each of ``n`` rows' fold (0 .. folds-1), balanced and shuffled by ``seed``: the one CV split."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n) % folds
    rng.shuffle(ids)
    return ids


def hull_vertices(correct: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Model indices of the zero router's hull vertices, cheapest first (ending at the best model)."""
    singles = single_model_points(correct, cost)
    return np.array([int(np.flatnonzero((singles[:, 0] == c) & (singles[:, 1] == q))[0])
                     for c, q in upper_hull(singles)], dtype=int)


def hull_mixture(verts: np.ndarray, vertex_cost: np.ndarray, c: float) -> tuple[int, int, float] | None:
    """The hull's two neighbours at mean cost ``c`` and P(dearer); None below the cheapest vertex."""
    if c < vertex_cost[0] * (1 - 1e-9):
        return None  # cheaper than any single model: no mixture reaches this cost
    s = int(np.searchsorted(vertex_cost, c, side="right")) - 1
    if s >= len(verts) - 1:  # at or past the best model: the hull is flat, serve it alone
        return int(verts[-1]), int(verts[-1]), 1.0
    return int(verts[s]), int(verts[s + 1]), float((c - vertex_cost[s]) / (vertex_cost[s + 1] - vertex_cost[s]))


class CrossFitZeroRouter:
    """Per row, what the zero router deployed from *other* rows gets: each fold is served by the hull
    (or the best model) of the remaining folds. The hull of all rows knows every row's outcome, and on a
    small table its vertices are partly the models that were lucky on these rows (measured in
    ``bench/guard_small_tables.py``: a guard compared with it served mixtures that were under the
    zero router of future traffic); this is the honest alternative a router must beat.
    ``folds`` < 2 or too few rows: the hull of all rows."""

    def __init__(self, correct: np.ndarray, cost: np.ndarray, folds: int = 5, seed: int = 0):
        self.correct = correct
        n = len(correct)
        if folds < 2 or n < 2 * folds:
            self.parts = [(np.ones(n, bool), hull_vertices(correct, cost), cost.mean(axis=0))]
        else:
            ids = fold_ids(n, folds, seed)
            self.parts = [(ids == f, hull_vertices(correct[ids != f], cost[ids != f]), cost[ids != f].mean(axis=0))
                          for f in range(folds)]

    def _served(self, c: float | None):
        """Per fold: its rows and the mixture (lo, hi, P(hi)) its zero router serves at mean cost ``c`` (below
        the cheapest model: that model; ``c`` None: the best model alone)."""
        for test, verts, means in self.parts:
            mix = None if c is None else hull_mixture(verts, means[verts], c)
            end = int(verts[-1] if c is None else verts[0])
            yield (test, *((end, end, 1.0) if mix is None else mix))

    def at(self, c: float | None, values: np.ndarray | None = None) -> np.ndarray:
        """(n,) each row's expected quality from what its fold's zero router serves at mean cost ``c``
        (``c`` None: the outcome of the model it calls best); ``values`` (n, m), e.g. the cost matrix:
        the expectation of those instead."""
        v = self.correct if values is None else values
        out = np.empty(len(v))
        for test, a, b, p in self._served(c):
            out[test] = (1 - p) * v[test, a] + p * v[test, b]
        return out

    def agrees(self, c: float | None, pair: tuple[int, int]) -> bool:
        """Whether every fold's zero router serves the same two models (``c`` None: the same best model)."""
        return all((a, b) == tuple(pair) for _, a, b, _ in self._served(c))


def draw(key: str) -> float:
    """A uniform number in [0, 1) from a request id or prompt: the guard's reproducible coin."""
    digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _behind(diff: np.ndarray, margin_se: float) -> bool:
    """True unless the per-row differences ``diff`` (router - alternative) are ahead by ``margin_se`` SEs."""
    se = diff.std() / np.sqrt(len(diff))
    return bool(diff.mean() <= margin_se * se + 1e-12)


@dataclass
class HullGuard:
    """Per knob of a grid: -1 (the learned rule decides) or the mixture ``lo``/``hi`` with ``p`` = P(hi)."""

    knobs: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p: np.ndarray
    margin_se: float = DEFAULT_MARGIN_SE

    @classmethod
    def fit(cls, knobs: np.ndarray, picks: np.ndarray, correct: np.ndarray, cost: np.ndarray,
            margin_se: float = DEFAULT_MARGIN_SE, best_knobs: np.ndarray | None = None,
            folds: int = ZERO_ROUTER_FOLDS) -> "HullGuard":
        """``picks`` (knobs, n): the learned rule's out-of-fold choices; ``correct``/``cost`` (n, m) realised;
        ``best_knobs`` (knobs,) bool: the knob values that mean "best quality" (see :func:`best_quality_knobs`).

        The router is compared with the zero router *as it would be deployed* from these rows: each of
        ``folds`` folds is served by the hull of the other folds (:class:`CrossFitZeroRouter`), so the
        comparison does not favour the hull's lucky models (``folds=0``: the hull of all rows, in sample).
        A guarded knob serves the hull of all rows."""
        knobs = np.asarray(knobs, dtype=float)
        rows = np.arange(correct.shape[0])
        verts = hull_vertices(correct, cost)
        vc = cost.mean(axis=0)[verts]
        best = int(verts[-1])
        zero = CrossFitZeroRouter(correct, cost, folds)
        lo, hi, p = np.full(len(knobs), -1), np.full(len(knobs), -1), np.zeros(len(knobs))
        for k, pick in enumerate(picks):
            if (pick == pick[0]).all() and pick[0] in verts:
                continue  # one hull model for every row already: a mixture would serve the same
            got = correct[rows, pick]
            if (best_knobs is not None and best_knobs[k] and zero.agrees(None, (best, best))
                    and _behind(got - zero.at(None), margin_se)):
                lo[k], hi[k], p[k] = best, best, 1.0
                continue
            c = cost[rows, pick].mean()
            mix = hull_mixture(verts, vc, c)
            if mix is not None and zero.agrees(c, mix[:2]) and _behind(got - zero.at(c), margin_se):
                lo[k], hi[k], p[k] = mix
        return cls(knobs, lo, hi, p, float(margin_se))

    # ------------------------------------------------------------------ serving
    @property
    def guarded(self) -> np.ndarray:
        return self.lo >= 0

    def index(self, knob: float) -> int:
        """The grid point a knob falls on (nearest on an arcsinh scale, which spans 0 ... inf knobs)."""
        if np.isinf(knob):
            return int(np.argmax(self.knobs))
        with np.errstate(invalid="ignore"):
            grid = np.where(np.isinf(self.knobs), np.nan, np.arcsinh(self.knobs * 1e4))
        return int(np.nanargmin(np.abs(grid - np.arcsinh(float(knob) * 1e4))))

    def entry(self, knob: float) -> tuple[int, int, float] | None:
        """The mixture served at ``knob`` (lo, hi, P(hi)), or None where the learned rule decides."""
        cache = self.__dict__.setdefault("_entries", {})
        if knob not in cache:
            if len(cache) > 4096:
                cache.clear()
            i = self.index(knob)
            cache[knob] = None if self.lo[i] < 0 else (int(self.lo[i]), int(self.hi[i]), float(self.p[i]))
        return cache[knob]

    def rows(self, picks: np.ndarray, correct: np.ndarray, cost: np.ndarray):
        """Per knob and row, the expected (quality, cost, top-model share) of the deployed router.

        A guarded knob's rows count at the mixture's expectation: the coin is independent of the outcome,
        so this is the mean over coins (the zero router's own points are expectations too).
        """
        n = len(correct)
        top = int(np.argmax(cost.mean(axis=0)))
        Q, C = correct[np.arange(n), picks], cost[np.arange(n), picks]
        T = (picks == top).astype(float)
        for k in np.flatnonzero(self.guarded):
            a, b, p = self.lo[k], self.hi[k], self.p[k]
            Q[k] = (1 - p) * correct[:, a] + p * correct[:, b]
            C[k] = (1 - p) * cost[:, a] + p * cost[:, b]
            T[k] = (1 - p) * (a == top) + p * (b == top)
        return Q, C, T

    # ------------------------------------------------------------------ artifacts
    def to_json(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "p": self.p.tolist(), "margin_se": self.margin_se}

    @classmethod
    def from_json(cls, knobs, data: dict) -> "HullGuard":
        return cls(np.asarray(knobs, dtype=float), np.asarray(data["lo"], dtype=int), np.asarray(data["hi"], dtype=int),
                   np.asarray(data["p"], dtype=float), float(data.get("margin_se", DEFAULT_MARGIN_SE)))


def best_quality_knobs(rule: str, knobs: np.ndarray) -> np.ndarray:
    """The knob values at which a rule asks for the best predicted quality, whatever the cost."""
    knobs = np.asarray(knobs, dtype=float)
    return knobs == 0.0 if rule == "cost_weight" else knobs > 1.0


def curve_of_rows(knobs: np.ndarray, Q: np.ndarray, C: np.ndarray, T: np.ndarray) -> Curve:
    return Curve(np.asarray(knobs), C.mean(axis=1), Q.mean(axis=1), T.mean(axis=1))


def crossfit_rows(knobs: np.ndarray, picks: np.ndarray, correct: np.ndarray, cost: np.ndarray, folds: np.ndarray,
                  rule: str, margin_se: float = DEFAULT_MARGIN_SE):
    """(Q, C, T, guarded share per knob) of the deployed router when each fold is routed by a guard
    fitted on the other folds only."""
    n_knobs, n = picks.shape
    Q, C, T = np.empty((n_knobs, n)), np.empty((n_knobs, n)), np.empty((n_knobs, n))
    share = np.zeros(n_knobs)
    ids = np.unique(folds)
    for f in ids:
        test, train = folds == f, folds != f
        guard = HullGuard.fit(knobs, picks[:, train], correct[train], cost[train], margin_se,
                              best_quality_knobs(rule, knobs))
        Q[:, test], C[:, test], T[:, test] = guard.rows(picks[:, test], correct[test], cost[test])
        share += guard.guarded / len(ids)
    return Q, C, T, share


def under_zero(Q: np.ndarray, C: np.ndarray, correct: np.ndarray, cost: np.ndarray, z: float = 2.0,
               tolerance: float = 1e-3) -> dict:
    """How far, per knob, a curve given per row (``Q``/``C`` (knobs, n)) is under the zero router at its
    mean cost: the largest gap, and how many knobs are under it by more than ``z`` paired standard errors
    (and more than ``tolerance``).
    Points cheaper than the cheapest single model are not comparable (no mixture reaches them)."""
    verts = hull_vertices(correct, cost)
    vc = cost.mean(axis=0)[verts]
    hull = upper_hull(single_model_points(correct, cost))
    worst, significant = 0.0, 0
    for q_rows, c_rows in zip(Q, C):
        mix = hull_mixture(verts, vc, c_rows.mean())
        if mix is None:
            continue
        a, b, p = mix
        diff = q_rows - ((1 - p) * correct[:, a] + p * correct[:, b])
        gap = float(hull_quality(hull, min(c_rows.mean(), vc[-1])) - q_rows.mean())
        worst = max(worst, gap)
        significant += int(gap > max(z * diff.std() / np.sqrt(len(diff)), tolerance))
    return {"max_under_zero": worst, "knobs_under_zero": significant}


def prompt_draws(prompts) -> np.ndarray:
    """The coin of every prompt (what the router draws when no request id is given)."""
    return np.array([draw(p) for p in prompts])
