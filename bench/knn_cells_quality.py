"""Do the kNN router's cells keep its quality? 5-fold CV AIQ of kNN and of the ensemble with the exact
neighbour scan, with the rows of the nearest cells scored (``pooled=False``) and with the nearest cells
pooled (the default), on every shipped table with >= 4,096 training rows per fold.

    python bench/knn_cells_quality.py

Prints one line per table and router: AIQ exact, then each cell mode and its difference from exact.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from router_quality import BENCHMARKS, load_benchmark  # noqa: E402
from tierwise.evaluate import evaluate  # noqa: E402
from tierwise.features import Featurizer  # noqa: E402


def main() -> None:
    featurizer = Featurizer()
    for name in BENCHMARKS:
        table = load_benchmark(name)
        if table is None:
            continue
        if len(table) * 0.8 < 4096:
            print(f"{name}: {len(table)} rows, below the cell index's 4,096 training rows: exact scan either way")
            continue
        X = featurizer.transform(table.prompts)
        aiq = {}
        for cells in (False, "auto", "pooled"):
            kp = {"cells": "auto", "pooled": cells == "pooled"} if cells else {"cells": False}
            params = {"knn": kp,
                      "ensemble": {"members": [("knn", "embedding", kp), ("mf", "all", {}),
                                               ("linear", "surface", {})]}}
            rep = evaluate(table, ["knn", "ensemble"], folds=5, features=X, router_params=params, guard=False)
            aiq[cells] = {k: rep.routers[k]["aiq"] for k in ("knn", "ensemble")}
        for k in ("knn", "ensemble"):
            a, b, c = aiq[False][k], aiq["auto"][k], aiq["pooled"][k]
            print(f"{name:10s} {k:9s} rows {len(table):6d}  AIQ exact {a:.4f}  cells {b:.4f}  diff {b - a:+.4f}"
                  f"  pooled {c:.4f} diff {c - a:+.4f}", flush=True)


if __name__ == "__main__":
    main()
