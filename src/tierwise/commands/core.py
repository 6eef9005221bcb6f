"""Routing-core commands: ``eval``, ``train``, ``route``, ``bench``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _encoder_view(name: str | None):
    from ..encoder import StaticEncoder, shipped_encoder

    views = StaticEncoder.views()
    if name is not None and name not in views:
        _fail(f"unknown encoder {name!r}; the shipped encoder has: {', '.join(views)}")
    return shipped_encoder(name)


def _check_out(path: Path, what: str = "--out") -> None:
    """Refuse an output path that cannot be written (a directory, a file where a folder should be) before
    any work; missing parent folders are created when writing, as `cascade calibrate` does."""
    from ..router import ArtifactError, check_output_path

    try:
        check_output_path(path)
    except ArtifactError as exc:
        _fail(f"{what} {exc}")


def _check_plot(plot: Path) -> None:
    """``eval --plot``: a writable path whose suffix is a format matplotlib writes (none: PNG)."""
    from matplotlib.backend_bases import FigureCanvasBase

    _check_out(plot, "--plot")
    fmt = plot.suffix[1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if fmt and fmt not in formats:
        _fail(f"--plot {plot}: unsupported image format {fmt!r}; use one of {', '.join(sorted(formats))}")


def _check_kinds(kinds, what: str, extra: tuple[str, ...] = ()) -> None:
    from ..routers.base import QUALITY_MODELS

    for k in kinds:
        if k not in QUALITY_MODELS and k not in extra:
            _fail(f"{what}: unknown router kind {k!r}; choose one of {', '.join(sorted(QUALITY_MODELS) + list(extra))}")
    if not kinds:
        _fail(f"{what}: name at least one router kind")


def _check_rule(rule: str) -> None:
    from ..decision import RULES

    if rule not in RULES:
        _fail(f"--rule {rule!r}: choose one of {', '.join(RULES)}")


def _load(table: Path, source: Optional[str], models: Optional[str], prices: Optional[Path]):
    from ..prices import PriceError
    from ..table import TableError, load_table

    try:
        t = load_table(table, prices)
        if source:
            t = t.with_source(source)
        if models:
            t = t.with_models([m.strip() for m in models.split(",") if m.strip()])
        return t
    except (TableError, PriceError) as exc:
        _fail(str(exc))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/inf
    return obj


def _print_report(report, console) -> None:
    from rich.table import Table

    pair = len(report.models) == 2
    tab = Table(title=f"{report.n} prompts, {len(report.models)} models, {report.folds}-fold CV")
    tab.add_column("router")
    cols = ["apgr", "cpt50", "cpt80", "cpt95"] if pair else []
    cols += ["aiq", "gap_closed", "cost_to_match_best", "quality_at_10pct_cost", "quality_at_25pct_cost",
             "quality_at_50pct_cost", "knobs_under_zero"]
    for c in cols:
        tab.add_column(c.replace("quality_at_", "q@").replace("pct_cost", "%cost").replace("knobs_under_zero", "<zero")
                       .replace("gap_closed", "gap closed"), justify="right")
    for name, m in report.routers.items():
        row = [name]
        for c in cols:
            v = m.get(c)
            if v is None:
                row.append("not reached" if c == "cost_to_match_best" else "-")
            elif c.startswith("cpt"):
                row.append(f"{v:.1f}%")
            elif c == "gap_closed":
                row.append(f"{v:.1%}")
            elif c == "knobs_under_zero":
                row.append(str(v))
            else:
                row.append(f"{v:.3f}")
        tab.add_row(*row)
    console.print(tab)
    console.print("'gap closed' = the share of the AIQ gap between the zero router and the oracle that a router "
                  "closes (RouterBench's yardstick). "
                  "'<name> +hull' = the deployed router (hull guard fitted on the other folds); '<zero' = knobs "
                  "where a curve is under the zero router by more than 2 paired standard errors. Routers decide "
                  "with their out-of-fold expected cost per request; curves are measured with the table's cost. "
                  "'zero_router (cross-fitted)' = the same mixtures of single models chosen on the other folds; "
                  "'zero_router per source' = each source served by its own best single models, chosen on the "
                  "other folds too: what knowing the task alone is worth.")
    if report.n <= SMALL_TABLE_ROWS:
        console.print(f"[yellow]On {report.n} prompts '<zero' is mostly noise: the zero router here is the hull of these "
                      "very rows, partly the models that were lucky on them (bench/guard_small_tables.py: at 400-2,000 "
                      "rows it did not predict the count on future traffic); compare with 'zero_router (cross-fitted)'.[/yellow]")
    single = Table(title=f"single models (cost in {report.cost_unit})")
    single.add_column("model")
    single.add_column("quality", justify="right")
    single.add_column("mean cost", justify="right")
    single.add_column("per-request cost from", justify="left")
    for name, (c, q), sig in zip(report.models, report.singles, report.cost_signal or [""] * len(report.models)):
        single.add_row(name, f"{q:.3f}", f"{c:.3g}", COST_SIGNAL_HELP.get(sig, sig))
    console.print(single)


SMALL_TABLE_ROWS = 2000  # up to this many rows, `eval`'s count of knobs under the zero router is flagged as noisy
COST_SIGNAL_HELP = {"tokens_out": "answer length (tokens_out|/outchars|) x fitted prices", "cost": "cost| per prompt",
                    "mean": "none: the model's mean cost"}
COST_MODES = {"request": ("request",), "mean": ("mean",), "both": ("request", "mean")}


def eval_command(
    table: Path = typer.Argument(..., help="Outcome table (wide CSV/CSV.GZ/JSONL: prompt, correct|<model>, ...)."),
    source: Optional[str] = typer.Option(None, help="Keep rows whose `source` starts with this prefix, e.g. gsm8k."),
    models: Optional[str] = typer.Option(None, help="Comma-separated subset of models (default: all)."),
    prices: Optional[Path] = typer.Option(None, help="Price table (YAML/CSV, USD per 1M tokens) for tables without cost columns."),
    folds: int = typer.Option(5, min=2, help="Cross-validation folds."),
    routers: str = typer.Option("random,knn,mf,ensemble", help="Router kinds to evaluate (with the default, "
                                "task-ensemble too where the table has two or more sources)."),
    rule: str = typer.Option("cost_weight", help="Decision rule swept for the curves: cost_weight | threshold."),
    seed: int = typer.Option(0, help="Fold assignment seed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    plot: Optional[Path] = typer.Option(None, help="Write a cost-quality PNG here."),
    cascade: bool = typer.Option(False, help="Also place the confidence cascade on the plot (needs logprob|<model> columns)."),
    cost: str = typer.Option("both", help="Cost the routers decide with: request (expected cost of each request), "
                             "mean (each model's mean cost), or both (rows '<kind> (mean cost)' too)."),
    guard: bool = typer.Option(True, help="Also report each router as deployed, with the hull guard ('<kind> +hull')."),
    ray: bool = typer.Option(False, "--ray", help="Fit the (router, fold) pairs in parallel on Ray: $RAY_ADDRESS, a Ray instance running here, or a new local one (docs/ray.md)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Implies --ray: auto | local | HOST:6379 | ray://HOST:10001."),
    ray_threads: Optional[int] = typer.Option(None, "--ray-threads", min=1, help="--ray: BLAS threads (= CPUs) per fit (default: this machine's, for results identical to a local run)."),
    ray_runtime_env: Optional[Path] = typer.Option(None, "--ray-runtime-env", help="--ray: runtime_env JSON/YAML for the workers."),
) -> None:
    """Cross-validate routers and print APGR/CPT (two models) or AIQ/cost-to-match (N models)."""
    from rich.console import Console

    from ..evaluate import DEFAULT_ROUTERS, evaluate, plot_report, routers_for

    console = Console(stderr=True)
    kinds = [k.strip() for k in routers.split(",") if k.strip()]
    _check_kinds(kinds, "--routers")  # every option checked before the cross-validation starts
    _check_rule(rule)
    if cost not in COST_MODES:
        _fail(f"--cost must be one of {sorted(COST_MODES)}")
    if plot:
        plot = plot if plot.suffix else plot.with_suffix(".png")  # what matplotlib writes for a bare name
        _check_plot(plot)
    t = _load(table, source, models, prices)
    if tuple(kinds) == DEFAULT_ROUTERS:
        kinds = list(routers_for(t.clean()))
    runner = _ray_fold_runner(ray_address, ray_threads, ray_runtime_env, console, as_json) if ray or ray_address else None
    try:
        report = evaluate(t, kinds, folds=folds, seed=seed, rule=rule, cost_modes=COST_MODES[cost], guard=guard,
                          progress=lambda m: console.log(m) if not as_json else None, runner=runner)
    except ValueError as exc:
        _fail(str(exc))
    if cascade:
        try:
            from ..cascade import cascade_cv_curve
            from ..evaluate import add_points_row

            add_points_row(report, "cascade (logprob)", cascade_cv_curve(t, folds=folds, seed=seed), t.clean())
        except Exception as exc:  # the cascade needs logprob columns; say why it is missing
            console.print(f"[yellow]cascade not shown: {exc}[/yellow]")
    if plot:
        try:
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_report(report, str(plot), title=f"{Path(table).name}{' / ' + source if source else ''}: cost vs quality")
        except (OSError, ValueError) as exc:
            _fail(f"--plot {plot}: {exc}")
        console.print(f"wrote {plot}")
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(report.to_json()), indent=1) + "\n")
    else:
        _print_report(report, Console())


def _ray_fold_runner(address, threads, runtime_env, console, quiet: bool):
    """``eval --ray``: the (router, fold) fits as Ray tasks (tierwise.eval_ray)."""
    from ..eval_ray import RayFoldRunner
    from ..ray_session import RayUnavailable, import_ray, load_runtime_env

    try:
        import_ray()
        return RayFoldRunner(address=address, runtime_env=load_runtime_env(runtime_env), threads=threads,
                             progress=None if quiet else console.log)
    except RayUnavailable as exc:
        _fail(str(exc))


AUTO_KINDS = ("knn", "mf", "linear", "ensemble")


def train_command(
    table: Optional[Path] = typer.Argument(None, help="Outcome table to learn from (not with --add-model)."),
    out: Path = typer.Option(..., help="Where to write the router artifact (.tw)."),
    kind: str = typer.Option("ensemble", help="Router kind: ensemble | task-ensemble (plus which source a prompt "
                             "looks like) | mf | knn | linear | source | prior | random, or 'auto' = the one of knn, "
                             "mf, linear, ensemble (and task-ensemble, given two or more sources) with the best "
                             "cross-validated AIQ."),
    source: Optional[str] = typer.Option(None, help="Keep rows whose `source` starts with this prefix."),
    models: Optional[str] = typer.Option(None, help="Comma-separated subset of models."),
    prices: Optional[Path] = typer.Option(None, help="Price table for tables without cost columns."),
    rule: str = typer.Option("cost_weight", help="Decision rule: cost_weight | threshold."),
    target: str = typer.Option("quality=0.95", help="Default knob as a target on the calibration curve, e.g. "
                               "quality=0.95 (95% of the best model's quality at least cost), share=0.3, cost=0.0004; "
                               "'best' = always the best predicted model."),
    cv: int = typer.Option(5, help="Folds for the CV metrics stored in the artifact (0 = skip, else 2 or more)."),
    feedback: Optional[str] = typer.Option(None, help="Decision-log path/URL: add user ratings (POST /v1/feedback) as training rows."),
    cost: str = typer.Option("auto", help="Cost the rule decides with: request (expected cost of each request: exact "
                             "input tokens, predicted answer length), mean (each model's mean cost), or auto (the one "
                             "with the better cross-validated AIQ; request without --cv)."),
    guard: bool = typer.Option(True, help="Hull guard: at knobs where the router is not ahead of mixing two single "
                               "models (cross-validated), serve that mixture."),
    add_model: Optional[str] = typer.Option(None, "--add-model", help="Place this new model into --router from its "
                                            "outcomes in --probe (K graded prompts, see `tierwise probe select`)."),
    probe: Optional[Path] = typer.Option(None, help="With --add-model: table with the new model's correct|<NAME> (and cost)."),
    router_path: Optional[Path] = typer.Option(None, "--router", help="With --add-model: the trained router to extend."),
    encoder: Optional[str] = typer.Option(None, help="Encoder view the router reads prompts with (default: the shipped "
                                          "default view; the full table, minilm-l6-static-256, decides more slowly: "
                                          "docs/encoder.md)."),
) -> None:
    """Train a router and save a versioned artifact with its metadata and CV metrics; or, with --add-model,
    place a new model into a trained router from a few probe outcomes."""
    if add_model:
        from .probe import add_model as add_model_command

        if table is not None:
            _fail(f"{table}: an outcome table is not used with --add-model (the new model's outcomes come from "
                  "--probe); drop it, or train without --add-model")
        return add_model_command(router_path, add_model, probe, out, prices)
    if table is None:
        _fail("give an outcome table to train on (or --add-model NAME --router R --probe TABLE)")
    from rich.console import Console

    import numpy as np

    from ..evaluate import evaluate, routers_for
    from ..features import Featurizer
    from ..router import Router, check_knob

    # every option is checked before the table is read and the cross-validation runs
    _check_out(out)
    _check_kinds([kind], "--kind", extra=("auto",))
    _check_rule(rule)
    if cv < 0 or cv == 1:
        _fail(f"--cv {cv}: give 0 (no cross-validation) or 2 or more folds")
    if kind == "auto" and not cv:
        _fail("--kind auto picks by cross-validation: give --cv 2 or more")
    if cost not in ("auto", "request", "mean"):
        _fail("--cost must be auto, request or mean")
    if target.strip().lower() != "best":
        try:
            check_knob(target, rule)
        except ValueError as exc:
            _fail(f"--target: {exc}")
    if feedback and not feedback.startswith(("postgres://", "postgresql://")) and not Path(feedback).is_file():
        _fail(f"{feedback}: decision log not found (--feedback takes the SQLite file or postgresql:// URL "
              "the gateway logs to)")
    console = Console(stderr=True)
    t = _load(table, source, models, prices)
    if feedback:
        from ..feedback import add_feedback_rows

        try:
            t, added = add_feedback_rows(t, feedback)
        except ValueError as exc:
            _fail(str(exc))
        console.log(f"added {added} rated requests from {feedback}")
    featurizer = Featurizer(_encoder_view(encoder))
    train_rows = t.trainable()
    console.log(f"encoding {len(train_rows)} prompts")
    X = featurizer.transform(train_rows.prompts)
    cv_metrics = None
    candidates = routers_for(train_rows, AUTO_KINDS) if kind == "auto" else (kind,)  # + task-ensemble given sources
    modes = ("request", "mean") if cost == "auto" else (cost,)
    if cv:
        console.log(f"{cv}-fold cross-validation of {', '.join(candidates)}")
        complete = np.isfinite(train_rows.correct).all(axis=1)
        try:
            rep = evaluate(train_rows.rows(complete), candidates, folds=cv, features=X[complete], rule=rule,
                           cost_modes=modes, guard=guard)
        except ValueError as exc:
            _fail(str(exc))
        if kind == "auto":  # model selection on the same folds: the stored CV figure is mildly optimistic
            def best_aiq(k: str) -> float:  # with --cost auto, the better of its two cost modes
                return max(rep.routers[r]["aiq"] for r in (k, f"{k} (mean cost)") if r in rep.routers)

            kind = max(candidates, key=best_aiq)
            console.log("AIQ " + ", ".join(f"{k} {best_aiq(k):.4f}" for k in candidates) + f": picked {kind}")
        if cost == "auto":
            with_mean = rep.routers[f"{kind} (mean cost)"]["aiq"]
            cost = "mean" if with_mean > rep.routers[kind]["aiq"] else "request"
            console.log(f"AIQ {kind}: per-request cost {rep.routers[kind]['aiq']:.4f}, mean cost {with_mean:.4f}: "
                        f"deciding with {cost} cost")
        cv_metrics = _jsonable({k: v for k, v in rep.routers.items() if k.split(" ")[0] in (*candidates, "zero_router", "oracle")})
    elif cost == "auto":
        cost = "request"
    console.log(f"fitting {kind} on {len(train_rows)} rows")
    try:
        oof = rep.oof[kind] if cv else None  # calibrate targets on every row's out-of-fold prediction
        oof_cost = rep.oof_costs[cost] if cv else None
        router = Router(kind, rule=rule, featurizer=featurizer).fit(train_rows, X=X, oof=oof, oof_cost=oof_cost,
                                                                    cost_mode=cost, guard=guard)
        if target.strip().lower() != "best":
            if router.calibration:
                router.calibrate(target)
            else:
                console.print(f"[yellow]too few fully graded rows to calibrate on; target {target!r} not applied: the "
                              "default knob is 'best predicted model' (set knob: in the pyramid)[/yellow]")
    except ValueError as exc:
        _fail(str(exc))
    router.metadata["cv"] = cv_metrics
    router.metadata["selected_by_cv"] = len(candidates) > 1
    router.metadata["cv_folds"] = cv
    try:
        router.save(out)
    except (OSError, ValueError) as exc:  # ArtifactError names the path; an OSError says it
        _fail(f"--out {out}: {exc}" if isinstance(exc, OSError) else str(exc))
    console.print(f"wrote {out}: {kind} over {router.models}, default knob {router.default_knob:.4g}")
    if cv_metrics:
        console.print(json.dumps(cv_metrics, indent=1))


def route_command(
    router_path: Path = typer.Argument(..., help="Router artifact (.tw)."),
    prompt: str = typer.Argument(..., help="Prompt text to route."),
    knob: Optional[str] = typer.Option(None, help="Knob (a finite number: a cost weight >= 0, or a quality "
                                       "threshold in [0, 1] for the threshold rule) or a target on the router's "
                                       "calibration curve: quality=0.95, share=0.3, cost=0.0004 or budget=0.5 "
                                       "(default: the router's default knob). `train --target best` has no "
                                       "equivalent here: use --knob 0 (cost_weight rule)."),
) -> None:
    """Show where one prompt would go and the predicted quality of every model."""
    from ..router import ArtifactError, Router, check_knob

    if knob is not None and knob.strip():
        try:
            check_knob(knob)  # the syntax (a finite number or a target) before the router is loaded
        except ValueError as exc:
            _fail(f"--knob: {exc}")
    try:
        router = Router.load(router_path)
        decision = router.route(prompt, knob)
    except (ArtifactError, ValueError) as exc:
        _fail(f"--knob: {exc}" if knob is not None and not isinstance(exc, ArtifactError) else str(exc))
    # strict JSON: an "always the cheapest" knob (a target resolved at the curve's end) is written "inf"
    k = decision.knob if math.isfinite(decision.knob) else str(decision.knob)
    typer.echo(json.dumps(_jsonable({"model": decision.model, "knob": k, "rule": decision.rule,
                                     "scores": decision.scores, "expected_cost": decision.costs,
                                     "mixed": decision.mixed, "guard": decision.guard}), indent=1, allow_nan=False))


def bench_command(
    table: Optional[Path] = typer.Option(None, help="Table to train the benchmark routers on (default: the shipped mmlu_pro table)."),
    kind: str = typer.Option("ensemble", help="Router kind to time."),
    iterations: int = typer.Option(2000, min=1, help="Decisions timed per cell."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    rows: str = typer.Option("1000,10000,100000", help="Training-table sizes for the rows sweep (comma-separated; "
                             "'' skips it)."),
    rounds: Optional[int] = typer.Option(None, min=1, help="Interleaved timing rounds (default 5): every cell takes a "
                                         "turn before any takes its next, so a slow spell of a shared machine falls on "
                                         "all cells alike."),
) -> None:
    """Router decision latency (encode + score + choose), p50/p99, by prompt length and model count,
    for a repeated prompt, distinct prompts and a cold tokenizer; then by training-table size."""
    from ..bench import ROUNDS, run_router_bench
    from ..promptsets import data_dir

    from ..errors import TierwiseError

    _check_kinds([kind], "--kind")
    table = table or data_dir() / "mmlu_pro.csv.gz"
    if not table.is_file():
        _fail(f"{table}: file not found (pass --table, or set TIERWISE_DATA to the folder of the shipped tables)")
    try:
        row_counts = tuple(int(r) for r in rows.split(",") if r.strip())
    except ValueError:
        _fail(f"--rows {rows!r}: expected comma-separated row counts, e.g. 1000,10000,100000")
    if any(r < 100 for r in row_counts):
        _fail(f"--rows {rows!r}: each training-table size must be at least 100 rows")
    try:
        run_router_bench(table, kind=kind, iterations=iterations, as_json=as_json, row_counts=row_counts,
                         rounds=ROUNDS if rounds is None else rounds)
    except (TierwiseError, ValueError) as exc:  # e.g. a table too small to train on: one line, no traceback
        _fail(str(exc))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("train")(train_command)
    app.command("route")(route_command)
    app.command("bench")(bench_command)
