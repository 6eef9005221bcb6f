"""Does the hull guard keep its promise on *future* traffic when the router learns from a small table?

    python bench/guard_small_tables.py                          # mmlu_pro, llmrouter_dc, gsm8k, mmlu; 400/800/2000 rows
    python bench/guard_small_tables.py --tables mmlu_pro --sizes 800 --reps 3 --no-write

`tierwise eval` counts the knobs where a router is under the zero router out of fold: each fold is
routed by a guard fitted on the other folds and the pooled curve is compared with the hull of the
whole table. On a small table that count can be high for the *deployed* router (docs/heldout.md:
up to 27 knobs on 805 AlpacaEval prompts). Two readings are possible: the guard fails on small
tables, or the measurement does (the zero router it is compared with is the table's own hull, which
knows every test fold's outcomes, and a guard switches on exactly where its training folds made the
hull models look good, i.e. where the test fold makes them look bad).

This script separates the two on the shipped tables, which are large enough to hold out real future
traffic. Per table, size and repetition: draw ``size`` rows as the user's table; train each router
as `tierwise train` does (5-fold out-of-fold calibration and guard, then a fit on every row); then
route every *other* row of the table (the future traffic, 4,000-14,000 rows) at each of the
calibration grid's 240 knobs, raw and deployed (the guard's mixtures at their expectation), and
compare with the future traffic's own zero router. Reported next to it: what `tierwise eval` says
on the small table itself. "Under" = more than 2 paired standard errors and 0.001 under the zero
router (``calibration.under_zero``, as `tierwise eval`).

Writes docs/guard_small_tables.json; docs/results.md includes its section (bench/router_quality.write_page).
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

from router_quality import GUARD_JSON, RESULTS_JSON, load_benchmark, write_page  # noqa: E402
from tierwise.calibration import DEFAULT_MARGIN_SE, HullGuard, best_quality_knobs, under_zero  # noqa: E402
from tierwise.evaluate import EVAL_KNOBS, evaluate  # noqa: E402
from tierwise.decision import knob_grid  # noqa: E402
from tierwise.features import Featurizer  # noqa: E402
from tierwise.metrics import router_picks  # noqa: E402
from tierwise.router import Router  # noqa: E402
from tierwise.routers.cost import table_cost_inputs  # noqa: E402

TABLES = ("mmlu_pro", "llmrouter_dc", "gsm8k", "mmlu")
KINDS = ("knn", "mf", "ensemble")


def in_sample_guard(router: Router, oof: np.ndarray, oof_cost: np.ndarray, mine, margin_se: float) -> HullGuard:
    """The guard as it was before it cross-fitted the zero router: compared with the hull of all rows
    (``folds=0``), on the same out-of-fold picks ``Router.fit`` calibrates on."""
    grid = knob_grid(router.rule, EVAL_KNOBS)
    picks = router_picks(oof, oof_cost, router.rule, grid, scale=router.cost_scale)
    return HullGuard.fit(grid, picks, mine.correct, mine.cost, margin_se, best_quality_knobs(router.rule, grid), folds=0)


def on_future(router: Router, X: np.ndarray, future, before: HullGuard) -> dict:
    """Knobs under the zero router of ``future`` traffic: the router raw, deployed (its guard) and deployed
    with the in-sample guard ``before``."""
    grid = knob_grid(router.rule, EVAL_KNOBS)
    tin, _, _ = table_cost_inputs(future)
    picks = router_picks(router.quality.predict(X), router.cost_model.predict(X, tin), router.rule, grid,
                         scale=router.cost_scale)
    rows = np.arange(len(future))
    out = {"raw": under_zero(future.correct[rows, picks], future.cost[rows, picks], future.correct, future.cost)}
    for key, guard in (("deployed", router.guard), ("in_sample_guard", before)):
        Q, C, _ = guard.rows(picks, future.correct, future.cost)
        out[key] = under_zero(Q, C, future.correct, future.cost)
        out[key]["guarded_knobs"] = int(guard.guarded.sum())
    return out


def run(table, X: np.ndarray, size: int, reps: int, featurizer, say, margin_se: float = DEFAULT_MARGIN_SE) -> list[dict]:
    cases = []
    for rep in range(reps):
        perm = np.random.default_rng(1000 * size + rep).permutation(len(table))
        small, future = np.sort(perm[:size]), np.sort(perm[size:])
        mine, later = table.rows(small), table.rows(future)
        report = evaluate(mine, KINDS, folds=5, features=X[small], margin_se=margin_se)
        for kind in KINDS:
            oof, oof_cost = report.oof[kind], report.oof_costs["request"]
            router = Router(kind, featurizer=featurizer).fit(mine, X=X[small], oof=oof, oof_cost=oof_cost,
                                                           margin_se=margin_se)
            before = in_sample_guard(router, oof, oof_cost, mine, margin_se)
            case = {"rep": rep, "kind": kind, "future_rows": len(later),
                    "eval": {"raw": report.routers[kind]["knobs_under_zero"],
                             "deployed": report.routers[kind + " +hull"]["knobs_under_zero"]},
                    "future": on_future(router, X[future], later, before)}
            cases.append(case)
            f = case["future"]
            say(f"{size} rows, rep {rep}, {kind}: eval says under zero at {case['eval']['raw']} raw / "
                f"{case['eval']['deployed']} deployed knobs; on {len(later)} future rows {f['raw']['knobs_under_zero']} raw "
                f"(max {f['raw']['max_under_zero']:.4f}) / {f['deployed']['knobs_under_zero']} deployed "
                f"(max {f['deployed']['max_under_zero']:.4f}) / {f['in_sample_guard']['knobs_under_zero']} with the "
                f"in-sample guard (max {f['in_sample_guard']['max_under_zero']:.4f})")
    return cases


def summarise(cases: list[dict]) -> dict:
    def count(path):
        vals = [c[path[0]][path[1]] if path[0] == "eval" else c["future"][path[1]]["knobs_under_zero"] for c in cases]
        return {"routers_under": sum(v > 0 for v in vals), "knobs_under": int(sum(vals)), "max_knobs": int(max(vals))}

    return {"routers": len(cases),
            "eval_raw": count(("eval", "raw")), "eval_deployed": count(("eval", "deployed")),
            "future_raw": count(("future", "raw")), "future_deployed": count(("future", "deployed")),
            "future_in_sample_guard": count(("future", "in_sample_guard")),
            **{f"future_{key}_max_gap": max(c["future"][key]["max_under_zero"] for c in cases)
               for key in ("raw", "deployed", "in_sample_guard")}}


def markdown(results: dict, args) -> str:
    lines = ["## The hull guard on small tables, checked on future traffic", "",
             f"Generated by `python bench/guard_small_tables.py` ({' '.join(sys.argv[1:]) or 'defaults'}). A router "
             f"({', '.join(KINDS)}) is trained as `tierwise train` does on a random sample of *size* rows of a shipped table "
             f"({args.reps} samples per size), then routes every other row of that table (the future traffic) at each of "
             f"{EVAL_KNOBS} knobs. A cell counts the routers (of all samples and kinds) with at least one knob under the zero "
             "router, and in brackets the knobs under it in total (under = more than 2 paired standard errors and 0.001 in "
             "quality). *eval*: as `tierwise eval` measures it on the small table itself (out of fold, against the small "
             "table's own hull). *future*: on the future traffic, against its own hull: the router raw, deployed with the "
             "guard as `tierwise train` fits it now (the zero router it compares with cross-fitted, and only mixtures "
             "every fold agrees on), and deployed with the guard as it was before (compared with the small table's hull, "
             "in sample). *gap*: the largest amount, significant or not, by which a router is under the future traffic's "
             "zero router at any knob.", "",
             "| table | size | routers | eval: raw | eval: deployed | future: raw | future: in-sample guard (before) "
             "| future: deployed (now) | gap: raw / before / now |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, by_size in results.items():
        for size, r in by_size.items():
            s = r["summary"]

            def cell(key):
                return f"{s[key]['routers_under']} ({s[key]['knobs_under']})"

            gaps = " / ".join(f"{s[f'future_{k}_max_gap']:.4f}" for k in ("raw", "in_sample_guard", "deployed"))
            lines.append(f"| {name} | {int(size):,} | {s['routers']} | {cell('eval_raw')} | {cell('eval_deployed')} | "
                         f"{cell('future_raw')} | {cell('future_in_sample_guard')} | {cell('future_deployed')} | {gaps} |")
    lines += ["", "On a few hundred rows no choice can promise the future traffic's zero router: the table's hull is partly "
              "its lucky models, and the router is learned from the same rows. The *eval* columns are a poor predictor of "
              "the *future* ones at these sizes (the small table's own hull knows every fold's outcomes).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="*", default=list(TABLES))
    ap.add_argument("--sizes", nargs="*", type=int, default=[400, 800, 2000])
    ap.add_argument("--reps", type=int, default=10, help="random samples of the table per size")
    ap.add_argument("--margin-se", type=float, default=DEFAULT_MARGIN_SE, help="the guard's margin (standard errors)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ as they are")
    args = ap.parse_args()
    featurizer = Featurizer()
    results: dict = {}
    t0 = time.time()
    for name in args.tables:
        table = load_benchmark(name)
        say = lambda msg, name=name: print(f"[{name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
        say(f"encoding {len(table)} prompts")
        X = featurizer.transform(table.prompts)
        results[name] = {}
        for size in args.sizes:
            if size > len(table) // 2:
                continue
            cases = run(table, X, size, args.reps, featurizer, say, args.margin_se)
            results[name][str(size)] = {"cases": cases, "summary": summarise(cases)}
    md = markdown(results, args)
    print(md)
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
    if args.no_write:
        return
    GUARD_JSON.write_text(json.dumps({"results": results, "markdown": md}, indent=1))
    if RESULTS_JSON.exists():
        write_page(json.loads(RESULTS_JSON.read_text()))


if __name__ == "__main__":
    main()
