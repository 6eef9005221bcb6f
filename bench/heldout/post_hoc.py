"""Would correcting the routers' predictions after the fact help: rescaling them, or pruning candidates?

Two cheap fixes for noisy quality predictions, applied to the same out-of-fold predictions (5-fold CV,
``tierwise eval``'s routers deciding with per-request cost), each fitted on the other folds only:

* **rescaled**: the predictions' spread is corrected by least squares on the other folds, either each
  model's deviation from its mean (``per model``: one slope per model) or every model's deviation from
  the prompt's mean over models (``across models``: one slope; the decision compares models, and this is
  the part of a prediction that moves it). A slope under 1 shrinks predictions that vary more than the
  outcomes they predict.
* **pruned**: only models on or near the other folds' single-model hull stay candidates (``hull``: on it;
  ``1 SE`` / ``3 SE``: at most that many standard errors of their mean quality under it). Picking the best of
  many noisy predictions favours the luckiest one (the winner's curse); fewer candidates, less of it.

Printed: the share of the oracle's gap over the zero router each variant closes (``gap_closed``), and for
the pruned ones the mean number of candidates kept.

    python bench/heldout/post_hoc.py /tmp/alpaca_eval.csv.gz /tmp/zeroeval.csv.gz
    python bench/heldout/post_hoc.py /tmp/alpaca_eval.csv.gz --drop FuseChat
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from _common import load_heldout, table_parser  # noqa: E402
from tierwise.decision import cost_scale, knob_grid  # noqa: E402
from tierwise.evaluate import EVAL_KNOBS, evaluate, fold_ids  # noqa: E402
from tierwise.features import Featurizer  # noqa: E402
from tierwise.metrics import hull_quality, nmodel_metrics, router_curve, single_model_points, upper_hull  # noqa: E402

FOLDS, KINDS = 5, ("mf", "ensemble", "knn")
PRUNE = {"hull": 0.0, "1 SE": 1.0, "3 SE": 3.0}


def _slope(dq: np.ndarray, dy: np.ndarray, axis) -> np.ndarray:
    return np.clip((dq * dy).sum(axis=axis) / np.maximum((dq * dq).sum(axis=axis), 1e-12), 0.0, 2.0)


def rescaled(Q: np.ndarray, y: np.ndarray, ids: np.ndarray, across: bool) -> np.ndarray:
    """``Q`` with its spread corrected, the slope of each test fold fitted on the other folds."""
    out = np.empty_like(Q)
    for f in np.unique(ids):
        tr, te = ids != f, ids == f
        if across:
            center = Q.mean(axis=1, keepdims=True)
            beta = _slope((Q - center)[tr], (y - y.mean(axis=1, keepdims=True))[tr], None)
            out[te] = center[te] + beta * (Q[te] - center[te])
        else:
            q_mean, y_mean = Q[tr].mean(axis=0), y[tr].mean(axis=0)
            beta = _slope(Q[tr] - q_mean, y[tr] - y_mean, 0)
            out[te] = y_mean + beta * (Q[te] - q_mean)
    return out


def pruned(Q: np.ndarray, y: np.ndarray, cost: np.ndarray, ids: np.ndarray, n_se: float) -> tuple[np.ndarray, float]:
    """``Q`` with the models more than ``n_se`` standard errors under the other folds' hull never picked."""
    out, kept = Q.copy(), []
    for f in np.unique(ids):
        tr, te = ids != f, ids == f
        pts = single_model_points(y[tr], cost[tr])
        under = hull_quality(upper_hull(pts), pts[:, 0]) - pts[:, 1]
        keep = under <= n_se * y[tr].std(axis=0) / np.sqrt(tr.sum()) + 1e-12
        out[np.ix_(te, ~keep)] = -1e3
        kept.append(keep.sum())
    return out, float(np.mean(kept))


def main() -> None:
    ap = table_parser(__doc__)
    args = ap.parse_args()
    for path in args.tables:
        t = load_heldout(path, args.drop)
        y, cost = t.correct, t.cost
        rep = evaluate(t, KINDS, folds=FOLDS, seed=0, features=Featurizer().transform(t.prompts), guard=False)
        zero, oracle = rep.routers["zero_router"]["aiq"], rep.routers["oracle"]["aiq"]
        grid, scale, ids = knob_grid("cost_weight", EVAL_KNOBS), cost_scale(cost), fold_ids(len(t), FOLDS, 0)

        def gap(Q: np.ndarray) -> float:
            curve = router_curve(Q, y, cost, knobs=grid, decision_cost=rep.oof_costs["request"], scale=scale)
            return (nmodel_metrics(curve.points(), y, cost)["aiq"] - zero) / (oracle - zero)

        print(f"{path.name}: {len(t)} prompts x {len(t.models)} models"
              + (f" (without {', '.join(args.drop)}*)" if args.drop else "") + "; share of the oracle's gap closed")
        for k in KINDS:
            Q = rep.oof[k]
            cells = [f"as is {gap(Q):6.1%}", f"rescaled per model {gap(rescaled(Q, y, ids, False)):6.1%}",
                     f"across models {gap(rescaled(Q, y, ids, True)):6.1%}"]
            for name, n_se in PRUNE.items():
                Qp, kept = pruned(Q, y, cost, ids, n_se)
                cells.append(f"pruned {name} ({kept:.0f}) {gap(Qp):6.1%}")
            print(f"  {k:9s} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
