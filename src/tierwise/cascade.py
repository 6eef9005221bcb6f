"""Cascade routing (FrugalGPT / AutoMix style) for users who have no outcome data to train on.

The cheapest model answers first; if its confidence is below that model's threshold the request
goes one step up the pyramid, until a model is confident enough or the top model answers.
Confidence is the mean token log-probability of the answer (free with every generation), or
optionally self-consistency: the fraction of ``k`` sampled answers that agree with the greedy one.

Thresholds are not guessed: :func:`calibrate` picks them from a collected table (``logprob|m`` and
``correct|m`` columns) by simulating the cascade offline to hit a target -- a fraction of the top
model's quality, or a cost ceiling. A threshold of ``None`` (``+inf``) means *skip the model*: it is
never called, so "always the top model" is one of the cascades searched.

This module is the offline half (thresholds, simulation, calibration: pure, no I/O); the online
cascade that serves requests is a dispatch strategy of the engine (``tierwise.engine.cascade``).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CascadeError
from .table import LOGPROB, OutcomeTable, TableError, load_table

SKIP = math.inf  # threshold meaning "do not call this model"
MAX_COMBOS = 6000


# --------------------------------------------------------------------------------------------
# thresholds


@dataclass
class Thresholds:
    """Per-model minimum confidence, pyramid order (cheapest first); the last model has none."""

    models: list[str]
    values: list[float]  # len(models) - 1 entries; +inf = skip, -inf = always accept
    confidence: str = "logprob"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.models) < 1:
            raise CascadeError("a cascade needs at least one model")
        if len(self.values) != len(self.models) - 1:
            raise CascadeError(
                f"{len(self.models)} models need {len(self.models) - 1} thresholds, got {len(self.values)}"
            )
        if self.confidence not in ("logprob", "self_consistency"):
            raise CascadeError(f"confidence must be 'logprob' or 'self_consistency', got {self.confidence!r}")

    def as_dict(self) -> dict:
        return {
            "kind": "tierwise-cascade",
            "confidence": self.confidence,
            "models": self.models,
            # JSON has no infinity: null = skip this model, a number = minimum confidence
            "thresholds": {m: (None if v == SKIP else (-1e9 if v == -math.inf else float(v)))
                           for m, v in zip(self.models[:-1], self.values)},
            **({"meta": self.meta} if self.meta else {}),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.as_dict()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Thresholds":
        path = Path(path)
        if not path.exists():
            raise CascadeError(f"{path}: cascade thresholds file not found")
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(path.read_text())
            else:
                data = json.loads(path.read_text())
        except Exception as exc:
            raise CascadeError(f"{path}: cannot be parsed ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not isinstance(
            data.get("thresholds"), dict
        ):
            raise CascadeError(f"{path}: expected 'models' (list) and 'thresholds' (mapping)")
        models = [str(m) for m in data["models"]]
        th = data["thresholds"]
        extra = sorted(set(th) - set(models[:-1]))
        if extra:
            raise CascadeError(f"{path}: thresholds.{extra[0]}: not a non-top model of {models}")
        values = []
        for m in models[:-1]:
            if m not in th:
                raise CascadeError(f"{path}: thresholds.{m}: missing (use null to skip the model)")
            v = th[m]
            if v is None:
                values.append(SKIP)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                values.append(float(v))
            else:
                raise CascadeError(f"{path}: thresholds.{m}: must be a number or null, got {v!r}")
        try:
            return cls(models, values, str(data.get("confidence", "logprob")), dict(data.get("meta") or {}))
        except CascadeError as exc:
            raise CascadeError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------
# offline: simulate and calibrate on a collected table


def load_cascade_table(path: str | Path) -> OutcomeTable:
    """A collected table, cheapest model first, rows every model answered; must have ``logprob|m``."""
    table = load_table(path).clean().order_by_cost()
    confidences(table)  # fail early, naming the missing column
    return table


def confidences(table: OutcomeTable) -> np.ndarray:
    """(n, m) confidence matrix from the table's ``logprob|m`` columns; NaN = no signal (escalates)."""
    missing = [m for m in table.models[:-1] if LOGPROB + m not in table.extra]
    if missing:
        raise TableError(
            table.path,
            f"no '{LOGPROB}{missing[0]}' column: the cascade calibrates on tables from `tierwise collect`",
        )
    n = len(table)
    cols = [table.extra.get(LOGPROB + m, np.full(n, np.nan)) for m in table.models]
    return np.column_stack(cols).astype(float)


def _simulate_many(correct: np.ndarray, cost: np.ndarray, conf: np.ndarray, T: np.ndarray):
    """Mean (cost, quality) for each row of ``T`` (k, m-1) thresholds; vectorised over k."""
    n, m = correct.shape
    k = T.shape[0]
    conf = np.where(np.isnan(conf), -np.inf, conf)
    full = np.concatenate([T, np.full((k, 1), -np.inf)], axis=1)  # top model always accepts
    called = ~np.isposinf(full)  # (k, m): skip models with +inf thresholds
    accept = (conf[None, :, :] >= full[:, None, :]) & called[:, None, :]  # (k, n, m)
    accept[:, :, -1] = True
    kept = accept.argmax(axis=2)  # first accepting model (k, n)
    upto = np.arange(m)[None, None, :] <= kept[:, :, None]  # models tried before or at kept
    paid = (upto & called[:, None, :]) * cost[None, :, :]
    mean_cost = paid.sum(axis=2).mean(axis=1)
    quality = np.take_along_axis(np.broadcast_to(correct, (k, n, m)), kept[:, :, None], axis=2)[:, :, 0]
    return mean_cost, quality.mean(axis=1), kept


def _as_values(table: OutcomeTable, thresholds) -> list[float]:
    if isinstance(thresholds, Thresholds):
        if thresholds.models != table.models:
            missing = [m for m in thresholds.models if m not in table.models]
            if missing:
                raise CascadeError(f"thresholds name model(s) {missing} not in the table {table.models}")
            raise CascadeError(f"thresholds order {thresholds.models} differs from the table's {table.models}")
        return list(thresholds.values)
    if isinstance(thresholds, dict):
        return [SKIP if thresholds.get(m, SKIP) is None else float(thresholds.get(m, SKIP)) for m in table.models[:-1]]
    values = [SKIP if v is None else float(v) for v in thresholds]
    if len(values) != table.n_models - 1:
        raise CascadeError(f"{table.n_models} models need {table.n_models - 1} thresholds, got {len(values)}")
    return values


def simulate(table: OutcomeTable, thresholds) -> tuple[float, float]:
    """The cascade's (mean cost per request, mean quality) on a graded table, offline.

    Cost counts every model the cascade called on the way (the price of escalating); quality is the
    kept model's ``correct``. ``thresholds``: :class:`Thresholds`, {model: value}, or a sequence.
    """
    values = _as_values(table, thresholds)
    c, q, _ = _simulate_many(table.correct, table.cost, confidences(table), np.array([values], dtype=float))
    return float(c[0]), float(q[0])


def _candidates(conf: np.ndarray) -> np.ndarray:
    """Threshold combinations to search: per model, quantiles of its confidence plus skip/accept-all.

    ``conf`` is the (n, m) matrix of :func:`confidences`, computed once by the caller."""
    free = conf.shape[1] - 1
    if free == 0:
        return np.zeros((1, 0))
    per = max(3, int(MAX_COMBOS ** (1.0 / free)) - 2)
    axes = []
    for j in range(free):
        col = conf[:, j]
        col = col[np.isfinite(col)]
        qs = np.unique(np.quantile(col, np.linspace(0, 1, per))) if col.size else np.array([])
        axes.append(np.concatenate([[SKIP, -np.inf], qs]))
    return np.array(list(itertools.product(*axes)), dtype=float)


def _frontier(costs: np.ndarray, quals: np.ndarray) -> np.ndarray:
    """Indices of Pareto-optimal points (no other point is cheaper and at least as good), by cost."""
    order = np.lexsort((-quals, costs))
    best, keep = -np.inf, []
    for i in order:
        if quals[i] > best + 1e-12:
            keep.append(i)
            best = quals[i]
    return np.array(keep, dtype=int)


def cascade_curve(table: OutcomeTable, fit: OutcomeTable | None = None) -> list[tuple[float, float]]:
    """The cascade's cost-quality curve on ``table``: one point per Pareto-optimal threshold set.

    Thresholds are searched on ``fit`` (default: ``table`` itself, i.e. an in-sample, optimistic
    curve); pass a separate calibration split for an honest held-out curve. Sorted by cost.
    """
    fit = table if fit is None else fit
    if fit.models != table.models:
        raise CascadeError(f"fit table models {fit.models} differ from {table.models}")
    fit_conf = confidences(fit)
    T = _candidates(fit_conf)
    fc, fq, _ = _simulate_many(fit.correct, fit.cost, fit_conf, T)
    chosen = T[_frontier(fc, fq)]
    c, q, _ = _simulate_many(table.correct, table.cost, confidences(table), chosen)
    return sorted(zip(c.tolist(), q.tolist()))


def cascade_cv_curve(table: OutcomeTable, folds: int = 5, seed: int = 0, points: int = 24) -> list[tuple[float, float]]:
    """Held-out cost-quality curve of the cascade, comparable with the routers' k-fold CV curves.

    For each cost budget on a grid (cheapest model .. cheapest-to-top cascade), thresholds are
    calibrated on k-1 folds (best quality within the budget) and applied to the held-out fold; the
    held-out outcomes of all folds are pooled into one (cost, quality) point per budget.
    """
    from .evaluate import fold_ids

    t = table.clean()
    if len(t) < folds * 4:
        raise CascadeError(f"{table.path}: only {len(t)} usable rows for a {folds}-fold cascade curve")
    conf = confidences(t)
    single = t.cost.mean(axis=0)
    budgets = np.linspace(single.min(), single.sum(), points)
    ids = fold_ids(len(t), folds, seed)
    cost_sum, qual_sum = np.zeros(points), np.zeros(points)
    for f in range(folds):
        fit, test = ids != f, ids == f
        T = _candidates(conf[fit])
        fc, fq, _ = _simulate_many(t.correct[fit], t.cost[fit], conf[fit], T)
        chosen = []
        for b in budgets:
            ok = np.flatnonzero(fc <= b * (1 + 1e-9))
            ok = ok if ok.size else np.array([int(np.argmin(fc))])
            chosen.append(ok[np.lexsort((fc[ok], -fq[ok]))[0]])
        c, q, _ = _simulate_many(t.correct[test], t.cost[test], conf[test], T[chosen])
        cost_sum += c * test.sum()
        qual_sum += q * test.sum()
    return sorted(zip((cost_sum / len(t)).tolist(), (qual_sum / len(t)).tolist()))


def parse_target(target: str) -> tuple[str, float]:
    """``quality=0.95`` (fraction of the top model's quality) or ``cost=0.0002`` (max USD/request).

    The one target syntax (``decision.parse_target``); the cascade can aim at these two kinds.
    """
    from .decision import parse_target as _parse

    try:
        key, v = _parse(target)
    except ValueError as exc:
        raise CascadeError(str(exc)) from None
    if key not in ("quality", "cost"):
        raise CascadeError(f"target {target!r}: the cascade calibrates to 'quality=FRACTION' or "
                           "'cost=USD_PER_REQUEST'")
    return key, v


def calibrate(table: OutcomeTable, target: str | tuple[str, float]) -> Thresholds:
    """Thresholds that hit ``target`` on ``table`` at the lowest cost (quality target) or best quality (cost).

    Quality targets are fractions of the top (most expensive) model's mean quality on the same rows.
    An unreachable target raises :class:`CascadeError` saying what is reachable.
    """
    key, value = parse_target(target) if isinstance(target, str) else target
    if len(table.models) < 2:
        raise CascadeError(f"{table.path}: a cascade needs at least two models (this table has "
                           f"{len(table.models)}: {', '.join(table.models)})")
    table = table.clean()
    if len(table) == 0:
        raise CascadeError(f"{table.path}: no row has every model graded")
    conf = confidences(table)
    T = _candidates(conf)
    costs, quals, _ = _simulate_many(table.correct, table.cost, conf, T)
    top_quality = float(np.nanmean(table.correct[:, -1]))
    if key == "quality":
        need = value * top_quality
        ok = quals >= need - 1e-12
        if not ok.any():
            raise CascadeError(
                f"quality={value:g} needs mean quality {need:.4f}; the best cascade on this table reaches "
                f"{quals.max():.4f} ({quals.max() / max(top_quality, 1e-12):.3f} of the top model)"
            )
        idx = np.flatnonzero(ok)
        best = idx[np.lexsort((-quals[idx], costs[idx]))[0]]
    else:
        ok = costs <= value * (1 + 1e-9)
        if not ok.any():
            raise CascadeError(f"cost={value:g} is below the cheapest cascade on this table ({costs.min():.3g} USD/request)")
        idx = np.flatnonzero(ok)
        best = idx[np.lexsort((costs[idx], -quals[idx]))[0]]
    meta = {
        "target": f"{key}={value:g}",
        "table": Path(table.path).name,
        "table_fingerprint": table.fingerprint(),
        "rows": len(table),
        "expected_cost_usd": float(costs[best]),
        "expected_quality": float(quals[best]),
        "top_model_quality": top_quality,
        "top_model_cost_usd": float(table.cost[:, -1].mean()),
        "note": "in-sample: expected figures are measured on the calibration table itself",
    }
    return Thresholds(list(table.models), [float(v) for v in T[best]], "logprob", meta)
