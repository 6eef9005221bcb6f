"""k-fold cross-validation of routers on an outcome table, reported with the field's metrics.

Features are computed once per table; every router kind then sees the same folds, so the
numbers are comparable. Out-of-fold predictions of all folds are pooled before the metrics are
computed (one curve over every usable row), as RouteLLM and RouterBench report them.

Every curve is measured with the table's realised per-prompt cost, and every router decides with
what it would know when deployed: its out-of-fold *expected* cost per request (``routers.cost``;
``cost_modes`` adds the per-model-mean variant, the router before per-request cost). Each learned
router is reported raw and *deployed*: with the hull guard (``calibration``) fitted on the other
folds, so the guard's own choices are out-of-sample too (row ``<kind> +hull``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .calibration import (
    DEFAULT_MARGIN_SE,
    CrossFitZeroRouter,
    crossfit_rows,
    curve_of_rows,
    fold_ids,
    hull_vertices,
    under_zero,
)
from .decision import cost_scale, knob_grid
from .metrics import (
    Curve,
    nmodel_metrics,
    oracle_curve,
    pair_metrics,
    router_picks,
    single_model_points,
    upper_hull,
)
from .routers import make_quality_model
from .routers.base import fit_quality
from .routers.cost import cross_val_cost, table_cost_inputs
from .routers.source import usable_groups
from .table import OutcomeTable

DEFAULT_ROUTERS = ("random", "knn", "mf", "ensemble")
TASK_ROUTERS = ("task-ensemble",)  # added to the defaults where a table has two or more sources (routers.source)
GUARD_SUFFIX = " +hull"
# references beside the zero router (the hull of the single models on every row, RouterBench's): the same
# chosen on other rows, and the best single models per source chosen on other rows (what knowing the task
# alone is worth)
ZERO_CROSSFIT = "zero_router (cross-fitted)"
ZERO_PER_SOURCE = "zero_router per source"
EVAL_KNOBS = 240  # the grid a trained router calibrates and serves on


def routers_for(table: OutcomeTable, routers: Sequence[str] = DEFAULT_ROUTERS) -> tuple[str, ...]:
    """``routers``, plus the ones that learn the source where ``table`` has sources to learn."""
    return tuple(routers) + (TASK_ROUTERS if usable_groups(table.source) is not None else ())


@dataclass
class EvalReport:
    models: list[str]
    n: int
    folds: int
    routers: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    singles: np.ndarray | None = None
    oof: dict[str, np.ndarray] = field(default_factory=dict)
    oof_costs: dict[str, np.ndarray] = field(default_factory=dict)  # per cost mode: what the routers decided with
    cost_signal: list[str] = field(default_factory=list)  # per model: tokens_out | cost | mean
    cost_unit: str = ""
    extra_points: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "routers": self.routers,
            "n": self.n,
            "models": self.models,
            "folds": self.folds,
            "cost_unit": self.cost_unit,
            "cost_signal": self.cost_signal,
            "single_models": {
                m: {"quality": float(q), "cost": float(c)} for m, (c, q) in zip(self.models, self.singles)
            },
        }


@dataclass(frozen=True)
class FoldJob:
    """One router kind fitted on every fold but ``fold``, predicting that fold: a unit of parallel work."""

    kind: str
    fold: int
    params: dict = field(default_factory=dict, hash=False, compare=False)


def fit_predict(job: FoldJob, X: np.ndarray, Y: np.ndarray, folds: np.ndarray, groups: np.ndarray | None = None
                ) -> np.ndarray:
    """Predicted quality of the rows of ``job.fold``, by a model fitted on the other folds (``groups``: each
    row's ``source``, for the models that use it)."""
    test = folds == job.fold
    model = make_quality_model(job.kind, **job.params)
    return fit_quality(model, X[~test], Y[~test], None if groups is None else groups[~test]).predict(X[test])


# runs fold jobs, returns their predictions in job order (tierwise.eval_ray.RayFoldRunner: one Ray task each)
FoldRunner = Callable[..., list[np.ndarray]]  # (jobs, X, Y, folds, groups)


def cross_val_predict(kind: str, X: np.ndarray, Y: np.ndarray, folds: np.ndarray, groups: np.ndarray | None = None,
                      **params) -> np.ndarray:
    """Out-of-fold predicted quality for every row."""
    oof = np.empty(Y.shape, dtype=float)
    for f in np.unique(folds):
        oof[folds == f] = fit_predict(FoldJob(kind, int(f), params), X, Y, folds, groups)
    return oof


def _run_fold_jobs(runner: FoldRunner, routers, params, X, Y, folds, groups) -> dict[str, np.ndarray]:
    """Every (router, fold) fit through ``runner`` at once, pooled into out-of-fold predictions per router."""
    jobs = [FoldJob(kind, int(f), params[kind]) for kind in routers for f in np.unique(folds)]
    out: dict[str, np.ndarray] = {}
    for job, pred in zip(jobs, runner(jobs, X, Y, folds, groups)):
        out.setdefault(job.kind, np.empty(Y.shape, dtype=float))[folds == job.fold] = pred
    return out


def metrics_for(pred: np.ndarray | None, curve: Curve, correct: np.ndarray, cost: np.ndarray) -> dict:
    out = nmodel_metrics(curve.points(), correct, cost)
    if correct.shape[1] == 2:
        weak, strong = np.argsort(cost.mean(axis=0), kind="stable")
        score = (pred[:, strong] - pred[:, weak]) if pred is not None else None
        if score is not None:
            out.update(pair_metrics(score, correct[:, weak], correct[:, strong]))
    return out


def evaluate(
    table: OutcomeTable,
    routers: Sequence[str] = DEFAULT_ROUTERS,
    *,
    folds: int = 5,
    seed: int = 0,
    rule: str = "cost_weight",
    features: np.ndarray | None = None,
    featurizer=None,
    progress: Callable[[str], None] | None = None,
    router_params: dict[str, dict] | None = None,
    cost_modes: Sequence[str] = ("request",),
    guard: bool = True,
    margin_se: float = DEFAULT_MARGIN_SE,
    runner: FoldRunner | None = None,
) -> EvalReport:
    """Cross-validate each router kind; also report the zero router and the oracle.

    ``runner``: fit all (router, fold) pairs at once through it (e.g. on Ray) instead of one after
    another here; the jobs and their inputs are the same, and so are the results.

    ``cost_modes``: the first is what every router decides with ("request": per-request expected cost;
    "mean": per model); each further mode adds a row ``<kind> (mean cost)``. ``guard``: add the deployed,
    hull-guarded row ``<kind> +hull`` of each learned router.
    """
    t = table.clean()
    if len(t) < folds * 4:
        raise ValueError(f"{table.path}: only {len(t)} usable rows (uncontaminated, fully evaluated) for {folds}-fold CV")
    say = progress or (lambda _msg: None)
    if features is None:
        if featurizer is None:
            from .features import Featurizer

            featurizer = Featurizer()
        say(f"encoding {len(t)} prompts")
        features = featurizer.transform(t.prompts)
    correct, cost = t.correct, t.cost
    groups = np.asarray(t.source)
    ids = fold_ids(len(t), folds, seed)
    report = EvalReport(models=list(t.models), n=len(t), folds=folds, cost_unit=t.cost_unit)
    report.singles = single_model_points(correct, cost)
    tin, _, tout = table_cost_inputs(t)
    decision_cost = {mode: cross_val_cost(features, tin, cost, tout, ids, mode) for mode in cost_modes}
    report.oof_costs = decision_cost
    from .routers.cost import CostModel

    report.cost_signal = CostModel(cost_modes[0]).fit(features, tin, cost, tout).signal
    grid, scale = knob_grid(rule, EVAL_KNOBS), cost_scale(cost)
    top = int(np.argmax(cost.mean(axis=0)))

    params = {kind: (router_params or {}).get(kind, {}) for kind in routers}
    pooled = None
    if runner is not None:
        say(f"cross-validating {', '.join(routers)}: {len(routers) * folds} (router, fold) fits at once")
        pooled = _run_fold_jobs(runner, routers, params, features, correct, ids, groups)
    for kind in routers:
        if pooled is None:
            say(f"cross-validating {kind}")
        pred = pooled[kind] if pooled is not None else cross_val_predict(kind, features, correct, ids, groups, **params[kind])
        report.oof[kind] = pred
        for i, mode in enumerate(cost_modes):
            picks = router_picks(pred, decision_cost[mode], rule, grid, scale)
            name = kind if i == 0 else f"{kind} ({mode} cost)"
            rows = np.arange(len(t))
            # pair metrics (APGR/CPT) rank prompts by predicted quality alone: only the main row has them
            _add_curve(report, name, pred if i == 0 else None, grid, correct[rows, picks], cost[rows, picks],
                       picks == top, correct, cost)
            if i == 0 and guard and kind != "random":
                Q, C, T, share = crossfit_rows(grid, picks, correct, cost, ids, rule, margin_se)
                _add_curve(report, kind + GUARD_SUFFIX, None, grid, Q, C, T, correct, cost)
                report.routers[kind + GUARD_SUFFIX]["guarded_knobs"] = round(float(share.sum()), 1)

    # references: the zero router (mixtures of single models) and the oracle
    zero = Curve(np.zeros(len(t.models)), report.singles[:, 0], report.singles[:, 1], np.zeros(len(t.models)))
    report.curves["zero_router"] = zero
    report.routers["zero_router"] = metrics_for(None, zero, correct, cost)
    if len(t.models) == 2:
        # a random mixture of the two models recovers the gap linearly: PGR(x) = x
        report.routers["zero_router"].update({"apgr": 0.5, "cpt50": 50.0, "cpt80": 80.0, "cpt95": 95.0})
    report.routers[ZERO_CROSSFIT] = nmodel_metrics(crossfit_zero_points(correct, cost, folds, seed), correct, cost)
    tasks = usable_groups(groups)  # the sources a task router would learn (small ones pooled)
    if tasks is not None:
        report.routers[ZERO_PER_SOURCE] = nmodel_metrics(
            per_source_zero_points(correct, cost, tasks, ids), correct, cost)
    orc = oracle_curve(correct, cost)
    report.curves["oracle"] = orc
    report.routers["oracle"] = metrics_for(correct, orc, correct, cost)
    for row in report.routers.values():
        _add_gap_closed(report, row)
    return report


def _add_gap_closed(report: EvalReport, row: dict) -> None:
    """``row["gap_closed"]``: the share of the oracle's AIQ gap over the zero router that ``row`` closes (0 = the
    zero router, 1 = the oracle; RouterBench's yardstick, #10's held-out bar)."""
    zero, oracle = report.routers["zero_router"]["aiq"], report.routers["oracle"]["aiq"]
    if "aiq" in row and oracle > zero:
        row["gap_closed"] = (row["aiq"] - zero) / (oracle - zero)


def crossfit_zero_points(correct: np.ndarray, cost: np.ndarray, folds: int = 5, seed: int = 0,
                         points: int = 200) -> np.ndarray:
    """(cost, quality) points of the zero router deployed from other rows: each fold served by the hull
    of the other folds (``calibration.CrossFitZeroRouter``), at ``points`` mean costs from the cheapest
    model to the dearest, and its best model alone. On a small table with many models the zero router
    of every row is flattered by the models that were lucky on these rows; this one is not."""
    zero = CrossFitZeroRouter(correct, cost, folds=folds, seed=seed)
    means = cost.mean(axis=0)
    sweep = [*np.linspace(means.min(), means.max(), points), None]
    return np.array([(zero.at(c, cost).mean(), zero.at(c).mean()) for c in sweep])


def per_source_zero_points(correct: np.ndarray, cost: np.ndarray, source: np.ndarray, ids: np.ndarray | None = None
                           ) -> np.ndarray:
    """(cost, quality) points of the best single models chosen per source, cross-fitted: for each fold
    ``ids`` (default: one fold, in sample), every source's hull of single models on the other folds. A
    point is one exchange rate ``lam`` (quality per unit of cost): each source serves the vertex of its
    hull where the hull's slope falls below ``lam``, so the budget goes where it buys most; the curve's
    hull mixes neighbouring points. A router that only tells the sources apart gets this far."""
    n = len(correct)
    ids = np.zeros(n, dtype=int) if ids is None else np.asarray(ids)
    names, src = np.unique(np.asarray(source), return_inverse=True)
    folds, fold = np.unique(ids, return_inverse=True)
    hits, spent = np.nan_to_num(correct), np.nan_to_num(cost)
    groups = []  # per (fold, source) with test rows: its hull on the training rows, and its test rows' sums
    for f in range(len(folds)):
        train = fold != f
        train = train if train.any() else ~train  # one fold: in sample
        for s in range(len(names)):
            test = (fold == f) & (src == s)
            if not test.any():
                continue
            rows = train & (src == s)
            rows = rows if rows.any() else train  # a source only in this fold: the fold's whole hull
            verts = hull_vertices(correct[rows], cost[rows])
            q, c = correct[rows][:, verts].mean(axis=0), cost[rows][:, verts].mean(axis=0)
            groups.append((verts, np.diff(q) / np.maximum(np.diff(c), 1e-300),
                           spent[test].sum(axis=0), hits[test].sum(axis=0)))
    rates = np.unique(np.concatenate([g[1] for g in groups] + [[0.0, np.inf]]))
    points = np.zeros((len(rates), 2))
    for verts, slopes, cost_sum, hit_sum in groups:
        # at exchange rate lam the group serves the vertex after every segment still worth lam (slopes fall)
        pick = verts[np.searchsorted(-slopes, -rates, side="right")]
        points += np.stack([cost_sum[pick], hit_sum[pick]], axis=1)
    return points / n


def _add_curve(report: EvalReport, name: str, pred, knobs, Q, C, T, correct, cost) -> None:
    """One row of the report from per-knob, per-row quality ``Q``, cost ``C`` and top-model share ``T``."""
    curve = curve_of_rows(knobs, Q, C, np.asarray(T, dtype=float))
    report.curves[name] = curve
    report.routers[name] = {**metrics_for(pred, curve, correct, cost), **under_zero(Q, C, correct, cost)}


def add_points_row(report: EvalReport, name: str, points, table: OutcomeTable) -> None:
    """Report a non-learned strategy (e.g. the cascade) given as (cost, quality) points on ``table``:
    it gets the same N-model metrics as the routers and its own line on the plot."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    report.extra_points[name] = pts
    report.routers[name] = nmodel_metrics(pts, table.correct, table.cost)
    _add_gap_closed(report, report.routers[name])


def plot_report(report: EvalReport, path: str, title: str = "") -> None:
    """Cost-quality plot: single models, zero-router hull, oracle, each router's hull."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    singles = report.singles
    ax.scatter(singles[:, 0], singles[:, 1], color="black", zorder=5, s=18, label="single models")
    if len(report.models) <= 12:
        for name, (c, q) in zip(report.models, singles):
            ax.annotate(name, (c, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
    zh = upper_hull(singles)
    ax.plot(zh[:, 0], zh[:, 1], "k--", lw=1.2, label=f"zero router (AIQ {report.routers['zero_router']['aiq']:.3f})")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # one line per router as it decides (the "(mean cost)" variants are in the tables only); "+hull" dashed
    names = [k for k in report.curves if k not in ("zero_router", "oracle") and " (" not in k]
    for i, name in enumerate(names + ["oracle"]):
        curve = report.curves[name]
        hull = upper_hull(curve.points())
        style = dict(color="grey", lw=1, ls=":") if name == "oracle" else dict(color=colors[i % len(colors)], lw=1.8)
        if name.endswith(GUARD_SUFFIX):
            style.update(lw=1.2, ls="--")
        ax.plot(hull[:, 0], hull[:, 1], label=f"{name} (AIQ {report.routers[name]['aiq']:.3f})", **style)
    for i, (name, pts) in enumerate(report.extra_points.items()):
        pts = np.atleast_2d(pts)
        ax.plot(pts[:, 0], pts[:, 1], marker="s", ms=4, lw=1.2, ls="-.", color=colors[(len(names) + i + 1) % len(colors)], label=name)
    ax.set_xlabel(f"mean cost per request ({report.cost_unit})")
    ax.set_ylabel("mean quality")
    ax.set_title(title or f"cost-quality frontier, {report.n} prompts, {report.folds}-fold CV")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
