"""Reproduce every router-quality figure in README.md / docs/results.md.

    python bench/router_quality.py                 # all shipped tables, 5-fold CV, writes docs/results.md + docs/img/*.png
    python bench/router_quality.py --only gsm8k     # one benchmark
    python bench/router_quality.py --minilm-dir /tmp/tw_cache   # also kNN over full MiniLM embeddings
                                                              # (minilm_<table>.npy, from bench/encoder_bench.py --save-minilm)

Nothing here is tuned per table: every benchmark runs the same router kinds with the same
hyper-parameters, the ones `tierwise train` uses by default. Each router is reported three ways:
deciding with each model's mean cost (`(mean cost)`, the router before per-request cost), with its
out-of-fold expected cost of each request (the router as trained now), and as deployed, with the hull
guard fitted on the other folds (`+hull`). `bench/probe_onboarding.py` adds its section to the same page.
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

from tierwise.evaluate import DEFAULT_ROUTERS, TASK_ROUTERS, evaluate, plot_report, routers_for  # noqa: E402
from tierwise.features import Featurizer  # noqa: E402
from tierwise.table import load_table  # noqa: E402

BENCHMARKS = {
    # name: (table, source prefix, models or None)
    "gsm8k": ("routellm.csv.gz", "gsm8k", None),
    "mmlu": ("routellm.csv.gz", "mmlu", None),
    "mmlu_pro": ("mmlu_pro.csv.gz", None, None),
    "llmrouter_dc": ("llmrouter_dc.csv.gz", None, None),
    "local": ("../local/local_pyramid.csv.gz", None, None),
}
ROUTERS = DEFAULT_ROUTERS + TASK_ROUTERS  # row order of the page
LEARNED = ("knn", "mf", "ensemble")
PAIR_KEYS = ("apgr", "cpt50", "cpt80", "cpt95")
N_KEYS = ("aiq", "cost_to_match_best", "quality_at_25pct_cost", "max_quality", "knobs_under_zero", "max_under_zero")
RESULTS_JSON = ROOT / "docs/results.json"
PROBE_JSON = ROOT / "docs/probe_onboarding.json"
GUARD_JSON = ROOT / "docs/guard_small_tables.json"


def fmt(v, key):
    if v is None:
        return "not reached" if key == "cost_to_match_best" else "-"
    if key.startswith("cpt"):
        return f"{v:.1f}%"
    if key in ("knobs_under_zero", "guarded_knobs"):
        return f"{v:g}"
    if key == "max_under_zero":
        return f"{v:.4f}"
    return f"{v:.3f}"


def row_order(routers: dict) -> list[str]:
    """Each router as (mean cost), per-request, +hull; then the references."""
    first = [k for k in routers if k.split(" ")[0] in ROUTERS]
    by_kind = sorted(first, key=lambda k: (ROUTERS.index(k.split(" ")[0]), 0 if "(mean" in k else 2 if "+hull" in k else 1))
    return by_kind + [k for k in routers if k not in by_kind]


def minilm_knn(name: str, table, minilm_dir: Path, source: str | None):
    """kNN on the original (torch) MiniLM embeddings, rows aligned with the raw table."""
    stem = Path(BENCHMARKS[name][0]).name.split(".")[0]
    path = minilm_dir / f"minilm_{stem}.npy"
    if not path.exists():
        return None
    emb = np.load(path)
    raw = load_table(ROOT / "data/outcomes" / BENCHMARKS[name][0])
    keep = ~raw.contaminated & np.isfinite(raw.correct).all(axis=1)
    if source:
        keep &= np.array([s.startswith(source) for s in raw.source])
    return emb[keep]


def load_benchmark(name: str):
    """A shipped benchmark by name (a name not in BENCHMARKS: the table at that path), cleaned; None without its file."""
    from tierwise.promptsets import data_dir

    file, source, models = BENCHMARKS.get(name, (name, None, None))
    path = data_dir() / file
    if not path.is_file():
        return None
    table = load_table(path).clean()
    if source:
        table = table.with_source(source)
    return table.with_models(models) if models else table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "docs/results.md"))
    ap.add_argument("--minilm-dir", type=Path, default=None)
    args = ap.parse_args()

    featurizer = Featurizer()
    results = {}
    for name, (fname, source, models) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        path = ROOT / "data/outcomes" / fname
        if not path.exists():
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        table = load_table(path)
        if source:
            table = table.with_source(source)
        table = table.clean()
        t0 = time.time()
        X = featurizer.transform(table.prompts)
        report = evaluate(table, routers_for(table), folds=args.folds, features=X, cost_modes=("request", "mean"),
                          progress=lambda m: print(f"[{name}] {m}", file=sys.stderr))
        if all(f"logprob|{m}" in table.extra for m in table.models[:-1]):  # collected tables: the cascade too
            from tierwise.cascade import cascade_cv_curve
            from tierwise.evaluate import add_points_row

            add_points_row(report, "cascade (logprob)", cascade_cv_curve(table, folds=args.folds), table)
        if args.minilm_dir is not None:
            emb = minilm_knn(name, table, args.minilm_dir, source)
            if emb is not None:
                from tierwise.evaluate import cross_val_predict, fold_ids, metrics_for
                from tierwise.metrics import router_curve

                pred = cross_val_predict("knn", emb, table.correct, fold_ids(len(table), args.folds, 0))
                curve = router_curve(pred, table.correct, table.cost)
                report.routers["knn-minilm(torch)"] = metrics_for(pred, curve, table.correct, table.cost)
                report.curves["knn-minilm(torch)"] = curve
        elapsed = time.time() - t0
        img = ROOT / "docs/img" / f"frontier_{name}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        plot_report(report, str(img), title=f"{name}: {report.n} prompts, {len(report.models)} models, {args.folds}-fold CV")
        results[name] = json.loads(json.dumps(report.to_json(), default=float))
        results[name]["table"] = fname + (f" source={source}" if source else "")
        keys = (PAIR_KEYS if len(report.models) == 2 else ()) + N_KEYS
        lines = [
            f"### {name}: `{fname}`{' source=' + source if source else ''} — {report.n} prompts, "
            f"{len(report.models)} models, {args.folds}-fold CV ({elapsed:.0f} s)",
            "",
            "| router | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for router in row_order(report.routers):
            m = report.routers[router]
            lines.append(f"| {router} | " + " | ".join(fmt(m.get(k), k) for k in keys) + " |")
        best = max(zip(report.singles[:, 1], report.singles[:, 0], report.models))
        lines += ["", f"Best single model: {best[2]} (quality {best[0]:.3f}). ![frontier](img/frontier_{name}.png)", ""]
        if name == "local":
            from tierwise.config import default_router_path
            from tierwise.router import Router

            if default_router_path().exists():
                shipped = Router.load(default_router_path())
                lines.insert(-1, f"Shipped default router (`src/tierwise/assets/default_router.tw`): `{shipped.kind}`"
                             f"{' (picked by CV AIQ among ' + ', '.join(k for k in shipped.metadata['cv'] if ' ' not in k and k not in ('zero_router', 'oracle')) + ', each deciding with per-request and with mean cost)' if shipped.metadata.get('selected_by_cv') else ''}"
                             f", deciding with {'each model' + chr(39) + 's mean cost' if shipped.cost_model is None or shipped.cost_model.mode == 'mean' else 'per-request cost'}"
                             f", default knob calibrated to `{shipped.metadata.get('calibrated_target')}`.")
        results[name]["markdown"] = "\n".join(lines)
        results[name]["seconds"] = round(elapsed, 1)
        print("\n".join(lines))
    # --only re-runs some benchmarks and keeps the others' last results, so the page stays whole
    merged = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    merged.update(results)
    RESULTS_JSON.write_text(json.dumps(merged, indent=1))
    write_page(merged, Path(args.out))
    readme = ROOT / "README.md"
    if readme.exists():
        write_readme_block(readme, merged, args.folds)


HEADER = (
    "# Router quality on the shipped outcome tables\n\n"
    "Generated by `python bench/router_quality.py` (do not edit by hand). Contaminated rows and rows with a\n"
    "missing outcome are excluded. Pairs: APGR and CPT exactly as RouteLLM defines them (10 quantile\n"
    "thresholds); CPT in % of calls to the strong model. N models: AIQ (RouterBench) over the single models'\n"
    "cost range, cost to match the best single model as a fraction of its cost, quality at 25% of its cost.\n"
    "Every curve is measured with the table's realised per-prompt cost; a router decides with what it would know\n"
    "when deployed: `<kind> (mean cost)` with each model's mean cost (the router before per-request cost),\n"
    "`<kind>` with its out-of-fold expected cost of each request (exact input tokens, predicted answer length or\n"
    "per-prompt cost; the mean where the table has no per-prompt signal), `<kind> +hull` as deployed: the hull\n"
    "guard fitted on the other folds serves the mixture of two single models where the router is not ahead of it\n"
    "(compared with the zero router cross-fitted within those folds, and only where all of them agree on the two models).\n"
    "`knobs_under_zero`: knob values (of 240) where the curve is under the zero router by more than 2 paired\n"
    "standard errors and 0.001; `max_under_zero`: the largest gap under it at any knob.\n"
    "References: `zero_router` is RouterBench's, the hull of the single models on every row (it knows each row's\n"
    "outcome); `zero_router (cross-fitted)` chooses the same mixtures on the other folds; `zero_router per source`\n"
    "serves each `source` with its own best single models, chosen on the other folds too (what knowing the task\n"
    "alone is worth; tables with one source have none).\n\n"
)


def summary_section(merged: dict) -> list[str]:
    """Per table and learned router: mean cost -> per-request cost -> deployed, against zero and oracle."""
    lines = ["## Per-request cost and the hull guard", "",
             "AIQ per table; `<zero` = knobs significantly under the zero router (raw -> deployed).", "",
             "| benchmark | per-request cost from | router | mean cost | per-request cost | deployed (+hull) | zero router | oracle | <zero raw -> deployed | guarded knobs (of 240) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in BENCHMARKS:
        r = merged.get(name)
        if not r or "cost_signal" not in r:
            continue
        rt = r["routers"]
        signal = ", ".join(sorted(set(r["cost_signal"])))
        for kind in LEARNED:
            if kind + " +hull" not in rt:
                continue
            raw, mean, hull = rt[kind], rt[kind + " (mean cost)"], rt[kind + " +hull"]
            lines.append(f"| {name} | {signal} | {kind} | {mean['aiq']:.4f} | {raw['aiq']:.4f} | {hull['aiq']:.4f} | "
                         f"{rt['zero_router']['aiq']:.4f} | {rt['oracle']['aiq']:.4f} | "
                         f"{raw['knobs_under_zero']} -> {hull['knobs_under_zero']} | {hull.get('guarded_knobs', 0):g} |")
    return lines + [""]


def write_page(merged: dict, out: Path = ROOT / "docs/results.md") -> None:
    """docs/results.md from the stored results (this script's, bench/probe_onboarding.py's and bench/guard_small_tables.py's)."""
    ordered = [merged[k] for k in BENCHMARKS if k in merged]
    parts = [HEADER, "\n".join(summary_section(merged))]
    parts += [r["markdown"] for r in ordered if "markdown" in r]
    for extra in (PROBE_JSON, GUARD_JSON):  # sections of bench/probe_onboarding.py and bench/guard_small_tables.py
        if extra.exists():
            parts.append(json.loads(extra.read_text())["markdown"])
    out.write_text("\n".join(parts) + "\n")
    print(f"wrote {out}", file=sys.stderr)


README_START, README_END = "<!-- router_quality:start -->", "<!-- router_quality:end -->"


def write_readme_block(readme: Path, merged: dict, folds: int) -> None:
    """Replace the README's summary block with figures from this script's results (never typed in)."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    lines = [
        README_START,
        "| benchmark | prompts x models | metric | ensemble (default) | ensemble deployed (+hull) | kNN | MF | zero router | oracle |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in BENCHMARKS:
        r = merged.get(name)
        if not r:
            continue
        rt = r["routers"]
        size = f"{r['n']:,} x {len(r['models'])}"
        metrics = [("apgr", "APGR"), ("cpt50", "CPT(50%)")] if len(r["models"]) == 2 else []
        metrics += [("aiq", "AIQ"), ("cost_to_match_best", "cost to match best model")]
        for key, label in metrics:
            cells = [fmt(rt.get(k, {}).get(key), key) if k in rt else "-"
                     for k in ("ensemble", "ensemble +hull", "knn", "mf", "zero_router", "oracle")]
            lines.append(f"| {name} | {size} | {label} | " + " | ".join(cells) + " |")
        if "cascade (logprob)" in rt:
            c = rt["cascade (logprob)"]
            lines.append(f"| {name} | {size} | cascade (logprob, no router) AIQ / cost to match | "
                         f"{fmt(c.get('aiq'), 'aiq')} / {fmt(c.get('cost_to_match_best'), 'cost_to_match_best')} | | | | | |")
    lines += ["", f"{folds}-fold cross-validation; generated by `python bench/router_quality.py`. Routers decide with "
              "their expected cost of each request; deployed = with the hull guard (fitted on the other folds). Cost to "
              "match = the router's cost to reach the best single model's quality, as a fraction of that model's cost.",
              README_END]
    head, rest = text.split(README_START, 1)
    readme.write_text(head + "\n".join(lines) + rest.split(README_END, 1)[1])
    print(f"updated the summary in {readme}", file=sys.stderr)

if __name__ == "__main__":
    main()
