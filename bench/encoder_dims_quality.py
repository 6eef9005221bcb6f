"""How many dimensions of the static encoder routing needs: 5-fold CV AIQ of kNN, MF and the ensemble
on every shipped table, with the full 256-d token table and with its projections onto the top d
principal directions (what the shipped views are, ``scripts/build_encoder.py``).

    python bench/encoder_dims_quality.py                 # d = 256 128 96 64
    python bench/encoder_dims_quality.py --dims 256,96 --tables gsm8k,mmlu

Differences are against the first ``--dims`` listed. A projected view's prompt vector is the normalised projection of the table's pooled sum, so each
view's features are computed here from the 256-d ones (the same vectors up to float rounding). Raw
routers (no hull guard): this compares what the features let a router learn. Decision latency per
view is what ``tierwise bench`` measures; the shipped default view's is in docs/bench.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from router_quality import BENCHMARKS, load_benchmark  # noqa: E402
from tierwise.encoder import StaticEncoder, principal_directions  # noqa: E402
from tierwise.evaluate import evaluate  # noqa: E402
from tierwise.features import SURFACE_NAMES, Featurizer  # noqa: E402

ROUTERS = ("knn", "mf", "ensemble")


def project(X: np.ndarray, P: np.ndarray) -> np.ndarray:
    k = len(SURFACE_NAMES)
    e = X[:, :-k] @ P
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return np.hstack([e, X[:, -k:]]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", default="256,128,96,64", help="comma-separated dimensions (256: the full table)")
    ap.add_argument("--tables", default=",".join(BENCHMARKS), help=f"comma-separated, of {', '.join(BENCHMARKS)} or table paths")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    full = StaticEncoder.load(None, StaticEncoder.views()[0])  # the table itself
    featurizer = Featurizer(full)
    projections = {d: principal_directions(full._emb, d) for d in dims if d < full.dim}
    print(f"encoder {full.name}; AIQ (5-fold CV, raw routers); diff = vs {dims[0]} dims")
    totals = {d: np.zeros(len(ROUTERS)) for d in dims}
    for name in args.tables.split(","):
        table = load_benchmark(name)
        if table is None:
            print(f"{name}: table not found, skipped")
            continue
        X = featurizer.transform(table.prompts)
        base = None
        for d in dims:
            Xd = X if d >= full.dim else project(X, projections[d])
            rep = evaluate(table, list(ROUTERS), folds=5, features=Xd, guard=False)
            aiq = np.array([rep.routers[r]["aiq"] for r in ROUTERS])
            base = aiq if base is None else base
            totals[d] += aiq - base
            cells = "  ".join(f"{r} {a:.4f} ({a - b:+.4f})" for r, a, b in zip(ROUTERS, aiq, base))
            print(f"{Path(name).name[:12]:12s} {len(table):6d} rows  {d:3d} dims  {cells}", flush=True)
    for d in dims:
        print(f"sum of differences, {d:3d} dims: " + "  ".join(f"{r} {v:+.4f}" for r, v in zip(ROUTERS, totals[d])))


if __name__ == "__main__":
    main()
