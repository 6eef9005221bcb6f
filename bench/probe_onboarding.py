"""Onboarding a model from K probes, measured leave-one-model-out on the shipped multi-model tables.

    python bench/probe_onboarding.py                       # mmlu_pro, llmrouter_dc, local; K = 10 30 50 100
    python bench/probe_onboarding.py --tables llmrouter_dc --ks 10 30

For each table, 5-fold CV; for each model M in turn ("the new model") and each fold: the router knows
the other models (trained on the other folds), K probe prompts are picked from the training folds
(``tierwise probe select``: medoids of the biggest k-means clusters of the placement's regressors; or at random), M's outcomes on them are revealed, M is
placed (``routers.probe.place``), and the test fold is routed over all models. Where M beat the best
model the router knows on the same probes (``onboarding.beats_incumbent``), M alone serves the
best-quality knob of that fold's rows, as ``--add-model`` does (``--no-best-rule``: never). The pooled out-of-fold
AIQ, averaged over the held-out models, is compared with the full-data router (M's whole column known)
and the zero router: gain captured = (AIQ_probe - AIQ_zero) / (AIQ_full - AIQ_zero).

Every router decides with the cost the full-data router would be trained to decide with: ``--cost auto``
(the default) picks, per table and fold split, each request's expected cost or each model's mean cost by
the full-data router's out-of-fold AIQ, the rule ``tierwise train --cost auto`` applies (on the local table
it picks the mean in most splits, as the shipped local router decides with it).

The router kind is kNN by default: its per-model predictions do not depend on the other models'
outcomes, so "the router without M" is exactly the full router minus M's column (no retraining, and
M's outcomes cannot leak into the other models' predictions). Every model decides with its
out-of-fold expected cost (for M its cost is known: a price, as `--add-model` fits it).
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
from tierwise.calibration import best_quality_knobs  # noqa: E402
from tierwise.metrics import aiq, curve_of_picks, nmodel_metrics, router_picks, single_model_points, upper_hull  # noqa: E402
from tierwise.onboarding import beats_incumbent  # noqa: E402
from tierwise.routers.cost import cross_val_cost, table_cost_inputs  # noqa: E402
from tierwise.routers.probe import CAUTION, cautious_logits, logits, place_posterior, select_probes, sigmoid  # noqa: E402

TABLES = ("mmlu_pro", "llmrouter_dc", "local")
STRATEGIES = ("selected", "random", "mean of random probes")
WITHOUT = "router without the new model"
SMALL_TABLE = 1000  # rows: below this the page averages SMALL_TABLE_SPLITS fold splits (split_seeds_for)
SMALL_TABLE_SPLITS = 20  # the local table: 5 splits left a standard error of 4-7 points on the gain captured, 20 about 3


def onboarding_curve(table, X, kind: str, ks, folds: int, seeds: int, pool_cap: int, say,
                     caution: float = CAUTION, best_rule: bool = True, split_seed: int = 0, cost_mode: str = "auto") -> dict:
    correct, cost = table.correct, table.cost
    n, m = correct.shape
    ids = fold_ids(n, folds, split_seed)
    say(f"cross-validating {kind}")
    P = cross_val_predict(kind, X, correct, ids)
    tin, _, tout = table_cost_inputs(table)
    grid, scale = knob_grid("cost_weight", 48), cost_scale(cost)
    at_best = best_quality_knobs("cost_weight", grid)

    def aiq_of(pred, new: int | None = None, best_rows: np.ndarray | None = None, dcost=None):
        """AIQ of the router deciding on ``pred``; on ``best_rows`` the best-quality knob serves model ``new``
        alone (where `--add-model`'s best-quality rule fired for the fold of the row)."""
        picks = router_picks(pred, dcosts[mode] if dcost is None else dcost, "cost_weight", grid, scale)
        if best_rows is not None and best_rows.any():
            picks[np.ix_(at_best, best_rows)] = new
        return nmodel_metrics(curve_of_picks(grid, picks, correct, cost).points(), correct, cost)["aiq"]

    modes = ("request", "mean") if cost_mode == "auto" else (cost_mode,)
    dcosts = {md: cross_val_cost(X, tin, cost, tout, ids, md) for md in modes}
    full_by_mode = {md: aiq_of(P, dcost=dcosts[md]) for md in modes}
    mode = max(modes, key=lambda md: (full_by_mode[md], md == "request"))  # a tie: per-request, as `train` keeps it
    say(f"deciding with {mode} cost (full-data router AIQ: "
        + ", ".join(f"{md} {a:.4f}" for md, a in full_by_mode.items()) + ")")
    singles = single_model_points(correct, cost)
    zero = aiq(upper_hull(singles), singles[:, 0].min(), singles[:, 0].max())
    full = full_by_mode[mode]
    kmax = max(ks)
    per_model: dict[str, dict] = {}
    rng = np.random.default_rng(split_seed)
    for j, name in enumerate(table.models):
        t0 = time.time()
        others = [i for i in range(m) if i != j]
        L = logits(P[:, others])
        runs = {"selected": seeds, "random": seeds, "mean of random probes": seeds}
        preds = {(s, k, r): P.copy() for s in STRATEGIES for k in ks for r in range(runs[s])}
        served = {key: np.zeros(n, bool) for key in preds}  # rows whose fold's rule gives M the best-quality knob
        for f in range(folds):
            pool, test = np.flatnonzero(ids != f), np.flatnonzero(ids == f)
            incumbent = others[int(np.argmax(correct[pool][:, others].mean(axis=0)))]  # the best model the router knows
            cand = pool if len(pool) <= pool_cap else np.sort(rng.choice(pool, pool_cap, replace=False))
            randoms = [rng.permutation(pool)[:kmax] for _ in range(seeds)]
            for k in ks:
                # the selection's k-means start varies the picks as much as a random draw: averaged over as many
                orders = {"selected": [cand[select_probes(P[cand][:, others], k, seed=r)] for r in range(seeds)],
                          "random": randoms}
                for strategy, draws in orders.items():
                    for r, order in enumerate(draws):
                        rows = order[:k]
                        w, b, S = place_posterior(L[rows], correct[rows, j])
                        preds[(strategy, k, r)][test, j] = sigmoid(
                            cautious_logits(L[test], w[None], np.array([b]), S[None], caution)[:, 0])
                        takes_best = best_rule and beats_incumbent(correct[rows, j], correct[rows, incumbent])
                        served[(strategy, k, r)][test] = takes_best
                        if strategy == "random":
                            preds[("mean of random probes", k, r)][test, j] = correct[rows, j].mean()
                            served[("mean of random probes", k, r)][test] = takes_best
        # each random draw is its own router; their AIQs are averaged (not their predictions)
        per_model[name] = {f"{s}@{k}": float(np.mean([aiq_of(preds[(s, k, r)], j, served[(s, k, r)])
                                                      for r in range(runs[s])]))
                           for s in STRATEGIES for k in ks}
        without = P.copy()
        without[:, j] = 0.0  # never predicted to answer: the router as it was before the new model
        per_model[name][WITHOUT] = aiq_of(without)
        say(f"{name}: " + ", ".join(f"K={k} {per_model[name][f'selected@{k}']:.4f}" for k in ks)
            + f" (full {full:.4f}, zero {zero:.4f}; {time.time() - t0:.0f} s)")
    mean = {key: float(np.mean([v[key] for v in per_model.values()])) for key in next(iter(per_model.values()))}
    gap = full - zero
    return {"n": n, "models": m, "kind": kind, "folds": folds, "full": full, "zero": zero, "ks": list(ks), "caution": caution,
            "cost_mode": mode, "full_by_cost_mode": full_by_mode,
            "mean_aiq": mean, "gain_captured": {k: (v - zero) / gap if gap > 0 else None for k, v in mean.items()},
            "per_model": per_model, "random_seeds": seeds, "pool_cap": pool_cap, "best_rule": best_rule,
            "split_seeds": [split_seed]}


def pooled(curves: list[dict]) -> dict:
    """Several fold splits' curves of one table as one: AIQs averaged; the gain captured of the averages, and
    its standard error over the splits (``gain_se``); ``per_model`` stays the first split's."""
    if len(curves) == 1:
        return curves[0]
    out = dict(curves[0])
    out["full"] = float(np.mean([c["full"] for c in curves]))
    out["mean_aiq"] = {k: float(np.mean([c["mean_aiq"][k] for c in curves])) for k in curves[0]["mean_aiq"]}
    gap = out["full"] - out["zero"]
    out["gain_captured"] = {k: (v - out["zero"]) / gap if gap > 0 else None for k, v in out["mean_aiq"].items()}
    per_split = [c["gain_captured"] for c in curves]
    out["gain_se"] = {k: (float(np.std([g[k] for g in per_split], ddof=1) / np.sqrt(len(curves)))
                          if all(g[k] is not None for g in per_split) else None) for k in out["mean_aiq"]}
    out["split_seeds"] = [c["split_seeds"][0] for c in curves]
    out["cost_mode"] = "/".join(sorted({c["cost_mode"] for c in curves}))
    out["per_split"] = [{"split_seed": c["split_seeds"][0], "cost_mode": c["cost_mode"], "full": c["full"],
                         "gain_captured": c["gain_captured"]}
                        for c in curves]
    return out


def split_seeds_for(n: int, requested: int | None) -> int:
    """Fold splits to average: as asked, else ``SMALL_TABLE_SPLITS`` on tables under ``SMALL_TABLE`` rows
    (where one split's test folds are too few prompts for the percentages to settle) and 1 on larger ones."""
    return requested if requested else (SMALL_TABLE_SPLITS if n < SMALL_TABLE else 1)


def markdown(results: dict, args) -> str:
    lines = ["## Onboarding a model from K probes (leave-one-model-out)", "",
             f"Generated by `python bench/probe_onboarding.py` ({' '.join(sys.argv[1:]) or 'defaults'}). Each model in turn "
             "is the new one: the router (kNN, trained on the other models) places it from K probe outcomes "
             "(`tierwise train --add-model`), picked by `tierwise probe select` (*selected*, AIQ averaged "
             f"over {args.seeds} k-means starts of the selection) or at random (*random*, AIQ averaged over {args.seeds} draws); *mean of random probes* knows only the new model's average "
             "quality on the probes. "
             + ("Where the new model beat the best model the router knows on the same probes, it alone serves the "
                "best-quality knob (cost weight 0), as `--add-model` does when the probe table grades that model. "
                if results[next(iter(results))].get("best_rule") else "Without `--add-model`'s best-quality rule. ")
             + "Every router decides with the cost the full-data router is trained to decide with (*cost*: each "
             "request's expected cost or each model's mean, picked by the full-data router's out-of-fold AIQ as "
             "`tierwise train --cost auto` picks it; *mean/request*: the fold splits did not all pick the same). A placed model decides on its posterior mean minus "
             f"{results[next(iter(results))].get('caution', CAUTION):g} posterior standard deviation(s) (as `--add-model` "
             "does); *router without the new model* never uses it (what the probes are worth is the difference). AIQ is "
             "the 5-fold out-of-fold AIQ over all models, averaged over the held-out "
             "models; gain captured = (AIQ - zero router) / (full-data router - zero router). Where the *splits* column "
             "is more than 1 (by default on tables of fewer than "
             f"{SMALL_TABLE:,} prompts, {SMALL_TABLE_SPLITS} splits), every figure is the mean over that many splits of the prompts into "
             "folds, and the gain captured is followed by its standard error over those splits.", ""]
    ks = args.ks
    lines += ["| table | prompts x models | splits | cost | full-data router | zero router | probes | "
              + " | ".join(f"K={k}" for k in ks) + " |", "|---|---|---:|---|---:|---:|---|" + "---:|" * len(ks)]

    def cell(r: dict, key: str) -> str:
        g, se = r["gain_captured"][key], r.get("gain_se", {}).get(key)
        return f"{r['mean_aiq'][key]:.4f}" + ("" if g is None else f" ({g:.0%}" + ("" if se is None else f" ± {se:.0%}") + ")")

    for name, r in results.items():
        head = (f"| {name} | {r['n']:,} x {r['models']} | {len(r.get('split_seeds', [0]))} | {r.get('cost_mode', 'request')} "
                f"| {r['full']:.4f} | {r['zero']:.4f}")
        for s in STRATEGIES:
            lines.append(f"{head} | {s} | " + " | ".join(cell(r, f"{s}@{k}") for k in ks) + " |")
        if WITHOUT in r["mean_aiq"]:
            lines.append(f"{head} | {WITHOUT} (no probes) | " + " | ".join([cell(r, WITHOUT)] * len(ks)) + " |")
    lines += ["", "AIQ (gain captured). A gain near 0 of the full router over the zero router makes the percentage noisy.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="*", default=list(TABLES))
    ap.add_argument("--ks", nargs="*", type=int, default=[10, 30, 50, 100])
    ap.add_argument("--kind", default="knn")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=10,
                    help="random probe draws, and k-means starts of the selection, averaged per fold")
    ap.add_argument("--pool-cap", type=int, default=3000, help="candidates the selection scans per fold")
    ap.add_argument("--caution", type=float, default=CAUTION,
                    help="posterior standard deviations a placed model's logit is lowered by (as `--add-model` does)")
    ap.add_argument("--cost", choices=("auto", "request", "mean"), default="auto",
                    help="cost every router decides with (auto: as `tierwise train --cost auto` picks it for the full-data router)")
    ap.add_argument("--no-best-rule", action="store_true",
                    help="without --add-model's best-quality rule (the new model never takes that knob alone)")
    ap.add_argument("--split-seeds", type=int, default=None,
                    help=f"fold splits averaged per table (default: {SMALL_TABLE_SPLITS} under {SMALL_TABLE:,} rows, else 1)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ as they are")
    args = ap.parse_args()
    featurizer = Featurizer()
    results = {}
    for name in args.tables:
        table = load_benchmark(name)
        say = lambda msg, name=name: print(f"[{name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
        say(f"encoding {len(table)} prompts")
        X = featurizer.transform(table.prompts)
        results[name] = pooled([onboarding_curve(table, X, args.kind, args.ks, args.folds, args.seeds, args.pool_cap,
                                                 say, args.caution, not args.no_best_rule, split_seed, args.cost)
                                for split_seed in range(split_seeds_for(len(table), args.split_seeds))])
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
