"""The hull guard: a deployed router is never worse than mixing two single models.

Sending each request at random to one of two single models, in a fixed ratio, reaches every point of
the segment between them; so the convex hull of the single models' (mean cost, quality) points, the
*zero router*, is on offer without any learning. Where a learned router's out-of-fold curve falls
under that hull at some knob, serving the hull's mixture there is better at the same cost.

:meth:`HullGuard.fit` compares, knob by knob, the router's out-of-fold operating point with the hull
at the same mean cost, and guards every knob where the router is not ahead by at least ``margin_se``
standard errors of the per-row difference (paired: same rows, both known). At a guarded knob a
request goes to the dearer of the two hull neighbours with probability ``p`` (the hull's mixing ratio
at the router's cost), else to the cheaper one; the draw is a hash of the request id or the prompt,
so a decision is reproducible (:func:`draw`). Past the best single model the hull is flat: a guarded
knob there serves the best model alone (``p = 1``).

:func:`crossfit_curve` is the honest evaluation of the whole procedure: each fold's rows are routed by
a guard fitted on the other folds only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .metrics import Curve, curve_of_picks, single_model_points, upper_hull

DEFAULT_MARGIN_SE = 1.0


def hull_vertices(correct: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Model indices of the zero router's hull vertices, cheapest first (ending at the best model)."""
    singles = single_model_points(correct, cost)
    hull = upper_hull(singles)
    out = []
    for c, q in hull:
        out.append(int(np.flatnonzero((singles[:, 0] == c) & (singles[:, 1] == q))[0]))
    return np.array(out, dtype=int)


def draw(key: str) -> float:
    """A uniform number in [0, 1) from a request id or prompt: the guard's reproducible coin."""
    digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


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
            margin_se: float = DEFAULT_MARGIN_SE) -> "HullGuard":
        """``picks`` (knobs, n): the learned rule's out-of-fold choices; ``correct``/``cost`` (n, m) realised."""
        knobs = np.asarray(knobs, dtype=float)
        rows = np.arange(correct.shape[0])
        verts = hull_vertices(correct, cost)
        vc = cost.mean(axis=0)[verts]
        lo = np.full(len(knobs), -1)
        hi = np.full(len(knobs), -1)
        p = np.zeros(len(knobs))
        for k, pick in enumerate(picks):
            c_k = cost[rows, pick].mean()
            if c_k < vc[0] * (1 - 1e-9):
                continue  # cheaper than any single model: no mixture reaches this cost
            s = int(np.searchsorted(vc, c_k, side="right")) - 1
            if s >= len(verts) - 1:  # at or past the best model: the hull is flat, serve it alone
                a = b = verts[-1]
                ratio = 1.0
            else:
                a, b = verts[s], verts[s + 1]
                ratio = float((c_k - vc[s]) / (vc[s + 1] - vc[s]))
            diff = correct[rows, pick] - ((1 - ratio) * correct[:, a] + ratio * correct[:, b])
            se = diff.std() / np.sqrt(len(diff))
            if diff.mean() < margin_se * se - 1e-12 or (se == 0 and diff.mean() <= 0):
                lo[k], hi[k], p[k] = a, b, ratio
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

    def apply(self, picks: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(knobs, n) picks with every guarded knob's row replaced by its mixture draw (``u`` (n,) coins)."""
        out = np.array(picks, copy=True)
        for k in np.flatnonzero(self.guarded):
            out[k] = np.where(u < self.p[k], self.hi[k], self.lo[k])
        return out

    # ------------------------------------------------------------------ artifacts
    def to_json(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "p": self.p.tolist(), "margin_se": self.margin_se}

    @classmethod
    def from_json(cls, knobs, data: dict) -> "HullGuard":
        return cls(np.asarray(knobs, dtype=float), np.asarray(data["lo"], dtype=int), np.asarray(data["hi"], dtype=int),
                   np.asarray(data["p"], dtype=float), float(data.get("margin_se", DEFAULT_MARGIN_SE)))


def expected_curve(guard: HullGuard, picks: np.ndarray, correct: np.ndarray, cost: np.ndarray):
    """The deployed curve on the calibration rows: the learned rule's points where unguarded, each
    guarded knob's mixture at its expected cost and quality."""
    curve = curve_of_picks(guard.knobs, picks, correct, cost)
    mc, mq = cost.mean(axis=0), correct.mean(axis=0)
    top = int(np.argmax(mc))
    for k in np.flatnonzero(guard.guarded):
        a, b, p = guard.lo[k], guard.hi[k], guard.p[k]
        curve.cost[k] = (1 - p) * mc[a] + p * mc[b]
        curve.quality[k] = (1 - p) * mq[a] + p * mq[b]
        curve.top_share[k] = (1 - p) * (a == top) + p * (b == top)
    return curve


def crossfit_curve(knobs: np.ndarray, picks: np.ndarray, correct: np.ndarray, cost: np.ndarray, folds: np.ndarray,
                   margin_se: float = DEFAULT_MARGIN_SE) -> tuple[Curve, np.ndarray]:
    """The deployed (guarded) curve where each fold is routed by a guard fitted on the other folds only.

    A guarded knob's rows count at the mixture's expected cost and quality (the coin is independent of
    the outcome, so this is the mean over coins; the zero router's own points are expectations too).
    Also returns, per knob, the share of folds whose guard served the mixture there.
    """
    rows = np.arange(len(correct))
    top = int(np.argmax(cost.mean(axis=0)))
    Q, C = correct[rows, picks], cost[rows, picks]
    T = (picks == top).astype(float)
    guarded = np.zeros(len(knobs))
    for f in np.unique(folds):
        test = np.flatnonzero(folds == f)
        guard = HullGuard.fit(knobs, picks[:, folds != f], correct[folds != f], cost[folds != f], margin_se)
        for k in np.flatnonzero(guard.guarded):
            a, b, p = guard.lo[k], guard.hi[k], guard.p[k]
            Q[k, test] = (1 - p) * correct[test, a] + p * correct[test, b]
            C[k, test] = (1 - p) * cost[test, a] + p * cost[test, b]
            T[k, test] = (1 - p) * (a == top) + p * (b == top)
            guarded[k] += 1.0 / len(np.unique(folds))
    return Curve(np.asarray(knobs), C.mean(axis=1), Q.mean(axis=1), T.mean(axis=1)), guarded


def prompt_draws(prompts) -> np.ndarray:
    """The coin of every prompt (what the router draws when no request id is given)."""
    return np.array([draw(p) for p in prompts])


def shortfall(curve, correct: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per knob: how far the curve is *under* the zero router at its cost (<= 0: on or above it).

    Points cheaper than the cheapest single model are not comparable (no mixture reaches them): 0.
    """
    singles = single_model_points(correct, cost)
    hull = upper_hull(singles)
    from .metrics import hull_quality

    gap = hull_quality(hull, curve.cost) - curve.quality
    return np.where(curve.cost >= singles[:, 0].min() * (1 - 1e-9), gap, 0.0)
