"""Does routing generalise to a table the project never tuned on? 5-fold CV on held-out outcome tables,
the learned routers' gain over the zero router as a share of the oracle's gap (#10's bar: >= 25%).

The zero router of that bar is RouterBench's: the hull of the single models on the whole table, which
knows every test row's outcome (on a small table with many models, partly the models that were lucky
on these rows). The line "zero router, cross-fitted" gives the alternative a user could deploy: each
fold served by the hull of the other folds; "zero router per source" is what knowing the task alone is
worth: each ``source`` served by its own best single models, chosen on the other folds too
(``evaluate.crossfit_zero_points`` and ``per_source_zero_points``; ``tierwise eval`` reports both).

    python bench/heldout/alpaca_eval_table.py /path/to/alpaca_eval.git /tmp/alpaca_eval.csv.gz
    python bench/heldout/heldout_eval.py /tmp/alpaca_eval.csv.gz
    python bench/heldout/heldout_eval.py /tmp/alpaca_eval.csv.gz --drop FuseChat   # a second model set

The tables are not shipped (built from public repositories by the converters in this folder, see
their docstrings for sources and licenses); nothing here was used to choose any default.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from _common import load_heldout, table_parser  # noqa: E402
from tierwise.evaluate import ZERO_CROSSFIT, ZERO_PER_SOURCE, evaluate, routers_for  # noqa: E402


def main() -> None:
    ap = table_parser(__doc__)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold split")
    args = ap.parse_args()
    for path in args.tables:
        table = load_heldout(path, args.drop)
        kinds = routers_for(table)
        rep = evaluate(table, kinds, folds=args.folds, seed=args.seed)
        r = rep.routers
        zero, oracle = r["zero_router"]["aiq"], r["oracle"]["aiq"]
        print(f"{path.name}: {len(table)} prompts x {len(table.models)} models"
              + (f" (without {', '.join(args.drop)}*)" if args.drop else "")
              + f"; {args.folds}-fold CV (split seed {args.seed}); zero router AIQ {zero:.4f}, oracle {oracle:.4f}")
        cf = r[ZERO_CROSSFIT]["aiq"]
        print(f"  zero router, cross-fitted AIQ {cf:.4f}  (the learned routers' gain over it: "
              + ", ".join(f"{k} {(r[k]['aiq'] - cf) / (oracle - cf):.1%}" for k in kinds if k != "random")
              + " of the oracle's gap)")
        if ZERO_PER_SOURCE in r:
            ps = r[ZERO_PER_SOURCE]["aiq"]
            print(f"  zero router per source AIQ {ps:.4f}  ({len(set(table.source))} sources; "
                  f"{r[ZERO_PER_SOURCE]['gap_closed']:.1%} of the oracle's gap: what knowing the task alone is worth)")
        for name, row in r.items():
            if name.startswith(("zero_router", "oracle", "random")):
                continue
            share = row.get("gap_closed", float("nan"))
            print(f"  {name:22s} AIQ {row['aiq']:.4f}  gain over zero {row['aiq'] - zero:+.4f} "
                  f"= {share:6.1%} of the oracle's gap  knobs under zero {row.get('knobs_under_zero', '-')}")


if __name__ == "__main__":
    main()
