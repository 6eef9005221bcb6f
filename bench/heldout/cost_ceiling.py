"""How much is knowing each request's cost worth, and can a better answer-length model get it?

A router decides with each request's expected cost: exact input tokens plus a predicted answer length
(``routers.cost.CostModel``: a ridge regression of ``tokens_out`` on the prompt features, per model).
For the same out-of-fold quality predictions (MF and the ensemble, 5-fold CV), this prints the share of
the oracle's gap over the zero router when the router decides with:

* ``mean cost``: each model's mean cost (no per-request cost);
* ``current``: the shipped per-request cost model;
* ``log``: the answer length regressed on a log scale, per model, mapped back with the log-normal mean;
* ``shared``: one log-length score of the prompt, fitted on every model's answers at once (15-36 times the
  rows), and per model a line on it (its typical length and how much it follows the score);
* ``true cost``: the realised cost of each answer (a ceiling: no router knows it before answering).

``corr`` is the mean over models of the correlation of the log predicted cost with the log realised cost.

    python bench/heldout/cost_ceiling.py /tmp/alpaca_eval.csv.gz /tmp/zeroeval.csv.gz data/local/local_pyramid.csv.gz
    python bench/heldout/cost_ceiling.py /tmp/alpaca_eval.csv.gz --drop FuseChat
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from _common import load_heldout, table_parser  # noqa: E402
from tierwise.decision import cost_scale, knob_grid  # noqa: E402
from tierwise.evaluate import EVAL_KNOBS, evaluate, fold_ids  # noqa: E402
from tierwise.features import Featurizer  # noqa: E402
from tierwise.metrics import nmodel_metrics, router_curve  # noqa: E402
from tierwise.routers.cost import CostModel, _ridge, table_cost_inputs  # noqa: E402

FOLDS, VARIANTS = 5, ("log", "shared")


def log_length_oof(variant: str, Xs_tr, Xs_te, log_len) -> tuple[np.ndarray, np.ndarray]:
    """Predicted log answer lengths (test rows, training rows) of every model."""
    m = log_len.shape[1]
    if variant == "log":
        fits = [_ridge(Xs_tr, log_len[:, j]) for j in range(m)]
        return (np.column_stack([Xs_te @ w + b for w, b in fits]), np.column_stack([Xs_tr @ w + b for w, b in fits]))
    w, b = _ridge(Xs_tr, log_len.mean(axis=1))  # "shared": one verbosity score, every model's answers at once
    v_tr, v_te = Xs_tr @ w + b, Xs_te @ w + b
    A = np.column_stack([np.ones(len(v_tr)), v_tr])
    coef = np.linalg.lstsq(A, log_len, rcond=None)[0]  # (2, m): per model a line on the score
    return coef[0] + np.outer(v_te, coef[1]), A @ coef


def oof_cost(variant: str, X, tin, cost, tout, ids) -> np.ndarray:
    """Out-of-fold expected cost of every request and model with answer-length model ``variant``."""
    out = np.empty(cost.shape)
    for f in np.unique(ids):
        te, tr = ids == f, ids != f
        cm = CostModel("request").fit(X[tr], tin[tr], cost[tr], tout[tr])  # prices (a, b, c) as shipped
        mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0) + 1e-6
        log_len = np.log1p(np.maximum(tout[tr], 0))
        pred, fitted = log_length_oof(variant, (X[tr] - mu) / sd, (X[te] - mu) / sd, log_len)
        length = np.expm1(pred + (log_len - fitted).var(axis=0) / 2)  # the log-normal mean
        out[te] = np.maximum(tin[te, None] * cm.a + cm.b * length + cm.c, cm.floor)
    return out


def main() -> None:
    ap = table_parser(__doc__)
    args = ap.parse_args()
    for path in args.tables:
        t = load_heldout(path, args.drop)
        tin, cost, tout = table_cost_inputs(t)
        if tout is None:
            print(f"{path.name}: no answer lengths (tokens_out|/outchars|): nothing to compare")
            continue
        X = Featurizer().transform(t.prompts)
        rep = evaluate(t, ["mf", "ensemble"], folds=FOLDS, seed=0, features=X, cost_modes=("request", "mean"), guard=False)
        r = rep.routers
        print(f"{path.name}: {len(t)} prompts x {len(t.models)} models"
              + (f" (without {', '.join(args.drop)}*)" if args.drop else ""))
        grid, scale = knob_grid("cost_weight", EVAL_KNOBS), cost_scale(cost)
        zero, oracle = r["zero_router"]["aiq"], r["oracle"]["aiq"]
        ids = fold_ids(len(t), FOLDS, 0)
        decision = {"current": rep.oof_costs["request"], **{v: oof_cost(v, X, tin, cost, tout, ids) for v in VARIANTS},
                    "true cost": cost}
        print(f"  {'mean cost':10s}            " + "  ".join(f"{k} {r[k + ' (mean cost)']['gap_closed']:6.1%}"
                                                          for k in ("mf", "ensemble")))
        for name, dc in decision.items():
            corr = np.mean([np.corrcoef(np.log(dc[:, j]), np.log(cost[:, j] + 1e-12))[0, 1] for j in range(cost.shape[1])])
            cells = []
            for k in ("mf", "ensemble"):
                curve = router_curve(rep.oof[k], t.correct, cost, knobs=grid, decision_cost=dc, scale=scale)
                a = nmodel_metrics(curve.points(), t.correct, cost)["aiq"]
                cells.append(f"{k} {(a - zero) / (oracle - zero):6.1%}")
            print(f"  {name:10s} corr {corr:4.2f}  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
