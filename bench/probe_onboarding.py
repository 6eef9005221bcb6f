"""Onboarding a model from K probes, measured leave-one-model-out on the shipped multi-model tables.

    python bench/probe_onboarding.py                       # mmlu_pro, llmrouter_dc, local; K = 10 30 50 100
    python bench/probe_onboarding.py --tables llmrouter_dc --ks 10 30

For each table, 5-fold CV; for each model M in turn ("the new model") and each fold: the router knows
the other models (trained on the other folds), K probe prompts are picked from the training folds
(``tierwise probe select``: medoids of the biggest k-means clusters of the placement's regressors; or at random), M's outcomes on them are revealed, M is
placed (``routers.probe.place``), and the test fold is routed over all models. The pooled out-of-fold
AIQ, averaged over the held-out models, is compared with the full-data router (M's whole column known)
and the zero router: gain captured = (AIQ_probe - AIQ_zero) / (AIQ_full - AIQ_zero).

The router kind is kNN by default: its per-model predictions do not depend on the other models'
outcomes, so "the router without M" is exactly the full router minus M's column (no retraining, and
M's outcomes cannot leak into the other models' predictions). Every model decides with its
out-of-fold expected cost per request (for M its cost is known: a price, as `--add-model` fits it).
Writes docs/probe_onboarding.json and refreshes docs/results.md (bench/router_quality.write_page).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from router_quality import PROBE_JSON, RESULTS_JSON, load_benchmark, write_page  # noqa: E402
from tierwise.decision import cost_scale, knob_grid  # noqa: E402
from tierwise.evaluate import cross_val_predict, fold_ids  # noqa: E402
from tierwise.features import Featurizer  # noqa: E402
from tierwise.metrics import nmodel_metrics, router_curve, single_model_points, upper_hull, aiq  # noqa: E402
from tierwise.routers.cost import cross_val_cost, table_cost_inputs  # noqa: E402
from tierwise.routers.probe import CAUTION, cautious_logits, logits, place_posterior, select_probes, sigmoid  # noqa: E402

TABLES = ("mmlu_pro", "llmrouter_dc", "local")
STRATEGIES = ("selected", "random", "mean of random probes")
WITHOUT = "router without the new model"


def onboarding_curve(table, X, kind: str, ks, folds: int, seeds: int, pool_cap: int, say,
                     caution: float = CAUTION) -> dict:
    correct, cost = table.correct, table.cost
    n, m = correct.shape
    ids = fold_ids(n, folds, 0)
    say(f"cross-validating {kind}")
    P = cross_val_predict(kind, X, correct, ids)
    tin, _, tout = table_cost_inputs(table)
    dcost = cross_val_cost(X, tin, cost, tout, ids, "request")
    grid, scale = knob_grid("cost_weight", 48), cost_scale(cost)

    def aiq_of(pred):
        return nmodel_metrics(router_curve(pred, correct, cost, "cost_weight", grid, decision_cost=dcost, scale=scale).points(),
                              correct, cost)["aiq"]

    singles = single_model_points(correct, cost)
    zero = aiq(upper_hull(singles), singles[:, 0].min(), singles[:, 0].max())
    full = aiq_of(P)
    kmax = max(ks)
    per_model: dict[str, dict] = {}
    rng = np.random.default_rng(0)
    for j, name in enumerate(table.models):
        t0 = time.time()
        others = [i for i in range(m) if i != j]
        L = logits(P[:, others])
        runs = {"selected": 1, "random": seeds, "mean of random probes": seeds}
        preds = {(s, k, r): P.copy() for s in STRATEGIES for k in ks for r in range(runs[s])}
        for f in range(folds):
            pool, test = np.flatnonzero(ids != f), np.flatnonzero(ids == f)
            cand = pool if len(pool) <= pool_cap else np.sort(rng.choice(pool, pool_cap, replace=False))
            randoms = [rng.permutation(pool)[:kmax] for _ in range(seeds)]
            for k in ks:
                orders = {"selected": [cand[select_probes(P[cand][:, others], k)]], "random": randoms}
                for strategy, draws in orders.items():
                    for r, order in enumerate(draws):
                        rows = order[:k]
                        w, b, S = place_posterior(L[rows], correct[rows, j])
                        preds[(strategy, k, r)][test, j] = sigmoid(
                            cautious_logits(L[test], w[None], np.array([b]), S[None], caution)[:, 0])
                        if strategy == "random":
                            preds[("mean of random probes", k, r)][test, j] = correct[rows, j].mean()
        # each random draw is its own router; their AIQs are averaged (not their predictions)
        per_model[name] = {f"{s}@{k}": float(np.mean([aiq_of(preds[(s, k, r)]) for r in range(runs[s])]))
                           for s in STRATEGIES for k in ks}
        without = P.copy()
        without[:, j] = 0.0  # never predicted to answer: the router as it was before the new model
        per_model[name][WITHOUT] = aiq_of(without)
        say(f"{name}: " + ", ".join(f"K={k} {per_model[name][f'selected@{k}']:.4f}" for k in ks)
            + f" (full {full:.4f}, zero {zero:.4f}; {time.time() - t0:.0f} s)")
    mean = {key: float(np.mean([v[key] for v in per_model.values()])) for key in next(iter(per_model.values()))}
    gap = full - zero
    return {"n": n, "models": m, "kind": kind, "folds": folds, "full": full, "zero": zero, "ks": list(ks), "caution": caution,
            "mean_aiq": mean, "gain_captured": {k: (v - zero) / gap if gap > 0 else None for k, v in mean.items()},
            "per_model": per_model, "random_seeds": seeds, "pool_cap": pool_cap}


def markdown(results: dict, args) -> str:
    lines = ["## Onboarding a model from K probes (leave-one-model-out)", "",
             f"Generated by `python bench/probe_onboarding.py` ({' '.join(sys.argv[1:]) or 'defaults'}). Each model in turn "
             "is the new one: the router (kNN, trained on the other models) places it from K probe outcomes "
             "(`tierwise train --add-model`), picked by `tierwise probe select` (*selected*) or at random "
             f"(*random*, AIQ averaged over {args.seeds} draws); *mean of random probes* knows only the new model's average "
             "quality on the probes. A placed model decides on its posterior mean minus "
             f"{results[next(iter(results))].get('caution', CAUTION):g} posterior standard deviation(s) (as `--add-model` "
             "does); *router without the new model* never uses it (what the probes are worth is the difference). AIQ is "
             "the 5-fold out-of-fold AIQ over all models, averaged over the held-out "
             "models; gain captured = (AIQ - zero router) / (full-data router - zero router).", ""]
    ks = args.ks
    lines += ["| table | prompts x models | full-data router | zero router | probes | "
              + " | ".join(f"K={k}" for k in ks) + " |", "|---|---|---:|---:|---|" + "---:|" * len(ks)]
    for name, r in results.items():
        size = f"{r['n']:,} x {r['models']}"
        for s in STRATEGIES:
            cells = []
            for k in ks:
                g = r["gain_captured"][f"{s}@{k}"]
                cells.append(f"{r['mean_aiq'][f'{s}@{k}']:.4f}" + ("" if g is None else f" ({g:.0%})"))
            lines.append(f"| {name} | {size} | {r['full']:.4f} | {r['zero']:.4f} | {s} | " + " | ".join(cells) + " |")
        if WITHOUT in r["mean_aiq"]:
            g = r["gain_captured"][WITHOUT]
            cell = f"{r['mean_aiq'][WITHOUT]:.4f}" + ("" if g is None else f" ({g:.0%})")
            lines.append(f"| {name} | {size} | {r['full']:.4f} | {r['zero']:.4f} | {WITHOUT} (no probes) | "
                         + " | ".join([cell] * len(ks)) + " |")
    lines += ["", "AIQ (gain captured). A gain near 0 of the full router over the zero router makes the percentage noisy.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="*", default=list(TABLES))
    ap.add_argument("--ks", nargs="*", type=int, default=[10, 30, 50, 100])
    ap.add_argument("--kind", default="knn")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3, help="random probe draws averaged per fold")
    ap.add_argument("--pool-cap", type=int, default=3000, help="candidates the selection scans per fold")
    ap.add_argument("--caution", type=float, default=CAUTION,
                    help="posterior standard deviations a placed model's logit is lowered by (as `--add-model` does)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ as they are")
    args = ap.parse_args()
    featurizer = Featurizer()
    results = {}
    for name in args.tables:
        table = load_benchmark(name)
        say = lambda msg, name=name: print(f"[{name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
        say(f"encoding {len(table)} prompts")
        X = featurizer.transform(table.prompts)
        results[name] = onboarding_curve(table, X, args.kind, args.ks, args.folds, args.seeds, args.pool_cap, say,
                                         args.caution)
    md = markdown(results, args)
    if args.no_write:
        print(md)
        return
    PROBE_JSON.write_text(json.dumps({"results": results, "markdown": md}, indent=1))
    print(md)
    if RESULTS_JSON.exists():
        write_page(json.loads(RESULTS_JSON.read_text()))


if __name__ == "__main__":
    main()
