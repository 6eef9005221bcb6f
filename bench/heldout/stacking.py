"""Would learning the ensemble's member weights (stacking) beat averaging them? Measured, not shipped.

The default ensemble averages its members (kNN, MF, logistic on surface statistics) equally. Stacking
cross-validates the members inside each training fold (4 inner folds) and weights them by the point of a
simplex grid (step 0.1) that minimises the out-of-fold squared error, one set of weights for all models.
Each table is cross-validated (5 folds) on two outer splits; stacking is run with two different inner
splits, so the spread it has from the inner split alone is next to its gain over the plain average.
Figures are shares of the oracle's gap over the zero router, as in heldout_eval.py.

    python bench/heldout/stacking.py /tmp/alpaca_eval.csv.gz /tmp/zeroeval.csv.gz data/local/local_pyramid.csv.gz
    python bench/heldout/stacking.py /tmp/alpaca_eval.csv.gz --drop FuseChat
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from _common import load_heldout, table_parser  # noqa: E402
from tierwise.evaluate import evaluate, fold_ids  # noqa: E402
from tierwise.routers.base import fit_quality, make_quality_model, register  # noqa: E402
from tierwise.routers.ensemble import EnsembleQuality, _view  # noqa: E402

INNER_FOLDS, STEP = 4, 0.1


def simplex_grid(k: int, step: float) -> np.ndarray:
    n = int(round(1 / step))
    return np.array([c for c in itertools.product(range(n + 1), repeat=k) if sum(c) == n], dtype=float) / n


class StackedEnsemble(EnsembleQuality):
    inner_seed = 0

    def fit(self, X, Y, groups=None):
        super().fit(X, Y, groups)
        ids = fold_ids(len(X), INNER_FOLDS, self.inner_seed)
        oof = np.zeros((len(self.active),) + Y.shape)
        for f in range(INNER_FOLDS):
            test = ids == f
            for j, i in enumerate(self.active):
                kind, view, params = self.members[i]
                member = fit_quality(make_quality_model(kind, **params), _view(X[~test], view), Y[~test])
                oof[j, test] = member.predict(_view(X[test], view))
        grid = simplex_grid(len(self.active), STEP)
        err = [np.square(np.tensordot(w, oof, axes=1) - Y)[np.isfinite(Y)].mean() for w in grid]
        self.weights = grid[int(np.argmin(err))]
        return self

    def predict(self, X):
        return sum(w * m.predict(_view(X, self.members[i][1])) for w, m, i in zip(self.weights, self.models, self.active))


INNER_SPLITS = (0, 1)
for _seed in INNER_SPLITS:  # one router kind per inner split
    register(f"stacked (inner split {_seed})")(type(f"Stacked{_seed}", (StackedEnsemble,), {"inner_seed": _seed}))


def main() -> None:
    ap = table_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=2, help="outer fold splits")
    args = ap.parse_args()
    kinds = ("ensemble", *(f"stacked (inner split {seed})" for seed in INNER_SPLITS))
    print(f"{'table':44s} split  " + "  ".join(f"{k:>23s}" for k in kinds))
    for path in args.tables:
        table = load_heldout(path, args.drop)
        label = f"{path.name} ({len(table.models)} models)"
        for seed in range(args.seeds):
            r = evaluate(table, kinds, folds=5, seed=seed, guard=False).routers
            print(f"{label:44s} {seed:5d}  " + "  ".join(f"{r[k]['gap_closed']:23.1%}" for k in kinds),
                  flush=True)


if __name__ == "__main__":
    main()
