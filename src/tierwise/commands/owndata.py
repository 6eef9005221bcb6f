"""``tierwise collect`` (outcome data on your own pyramid) and ``tierwise cascade`` (threshold routing)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

GRADER_HELP = "numeric | choice | choice-logprob | exact | regex | judge (default: by prompt set)"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _pyramid(config: Optional[Path]):
    from ..config import ConfigError, Pyramid, default_pyramid

    try:
        return Pyramid.load(config) if config is not None else default_pyramid()
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))


def _judge_backend(pyramid, judge: str):
    """``--judge NAME`` (a pyramid model) or ``--judge URL#MODEL`` (an OpenAI-compatible endpoint):
    the backend, its name, and a factory that builds it again where the grader is sent (Ray workers)."""
    from functools import partial

    from ..backends import build_backend
    from ..config import ModelConfig

    if judge.startswith(("http://", "https://")):
        url, _, model = judge.partition("#")
        if not model:
            _fail(f"--judge {judge!r}: write an external judge as URL#MODEL, e.g. http://host/v1#gpt-4o-mini")
        cfg = ModelConfig(name=f"judge:{model}", backend="openai", endpoint=url, model=model,
                          api_key_env="TIERWISE_JUDGE_API_KEY" if _env("TIERWISE_JUDGE_API_KEY") else None,
                          input_per_1m=0, output_per_1m=0)
        return build_backend(cfg), f"{url}#{model}", partial(build_backend, cfg)
    try:
        cfg = pyramid.model(judge)
        return build_backend(cfg), judge, partial(build_backend, cfg)
    except KeyError as exc:
        _fail(f"--judge: {exc.args[0]}")


def _env(name: str) -> bool:
    import os

    return bool(os.environ.get(name))


def register(app: typer.Typer) -> None:
    @app.command()
    def collect(
        prompts: str = typer.Argument(..., help="JSONL/CSV with 'prompt' (or 'question') and optional 'answer', or a built-in set: gsm8k, mmlu_pro"),
        out: Path = typer.Option(..., "--out", "-o", help="wide outcome table to write (.csv or .csv.gz)"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="pyramid YAML (default: the embedded local pyramid)"),
        grader: Optional[str] = typer.Option(None, "--grader", "-g", help=GRADER_HELP),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", help="fixed-seed sample of N prompts, stratified by source"),
        seed: int = typer.Option(0, "--seed", help="sampling seed for --limit"),
        concurrency: Optional[int] = typer.Option(None, "--concurrency", "-k", help="requests in flight per model (default: the model's max_concurrency)"),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="answer length limit (default: the grader's)"),
        models: Optional[str] = typer.Option(None, "--models", help="comma-separated subset of the pyramid's models"),
        pattern: Optional[str] = typer.Option(None, "--pattern", help="regex grader: pattern for every item (else the item's 'pattern' field)"),
        judge: Optional[str] = typer.Option(None, "--judge", help="judge grader: a pyramid model name, or URL#MODEL of an OpenAI-compatible endpoint"),
        sidecar: Optional[Path] = typer.Option(None, "--sidecar", help="finished-cells SQLite file (default: <out>.cells.sqlite)"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
        ray: bool = typer.Option(False, "--ray", help="run the cells on Ray: $RAY_ADDRESS, a Ray instance running here, or a new local one (docs/ray.md)"),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="implies --ray: auto | local | HOST:6379 | ray://HOST:10001"),
        ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="--ray: workers per local (GGUF) model; an HTTP model gets one async worker"),
        ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", min=1, help="--ray: CPUs (= threads) each local-model worker reserves (default: the model's n_threads)"),
        ray_gpus: float = typer.Option(0.0, "--ray-gpus", min=0.0, help="--ray: GPUs each local-model worker reserves"),
        ray_runtime_env: Optional[Path] = typer.Option(None, "--ray-runtime-env", help="--ray: runtime_env JSON/YAML for the workers (py_modules, pip, env_vars)"),
    ) -> None:
        """Run every pyramid model on every prompt, grade, and write an outcome table (resumable)."""
        from ..collection import CollectError, run_collect, sidecar_path, specs_from_pyramid
        from ..ray_session import RayUnavailable
        from ..graders import GraderError, make_grader
        from ..promptsets import load_promptset
        from ..table import TableError

        if concurrency is not None and concurrency < 1:
            _fail(f"--concurrency must be >= 1, got {concurrency}")
        try:
            pset = load_promptset(prompts, limit=limit, seed=seed)
        except TableError as exc:
            _fail(str(exc))
        name = grader or pset.default_grader
        if name is None:
            _fail(f"{prompts}: cannot tell how to grade this set (no gold 'answer'); pass --grader regex or judge")
        pyramid = _pyramid(config)
        if models:
            wanted = [m.strip() for m in models.split(",") if m.strip()]
            unknown = [m for m in wanted if m not in pyramid.chat_names]
            if unknown:
                _fail(f"--models: {unknown[0]!r} is not a chat model of the pyramid ({', '.join(pyramid.chat_names)})")
            pyramid = pyramid.model_copy(update={"models": [pyramid.model(m) for m in wanted]})
        options: dict = {"max_tokens": max_tokens}
        if name == "regex":
            options["pattern"] = pattern
        if name == "judge":
            if not judge:
                _fail("--grader judge needs --judge MODEL (a pyramid model) or --judge URL#MODEL")
            options["judge"], options["judge_name"], options["judge_factory"] = _judge_backend(pyramid, judge)
        try:
            g = make_grader(name, **options)
        except GraderError as exc:
            _fail(str(exc))
        specs = specs_from_pyramid(pyramid, concurrency)
        runner = None
        try:
            if ray or ray_address:
                from ..collection.runner_ray import RayRunner
                from ..ray_session import import_ray, load_runtime_env

                import_ray()
                runner = RayRunner(address=ray_address, runtime_env=load_runtime_env(ray_runtime_env),
                                   actors_per_model=ray_actors, cpus_per_actor=ray_cpus, gpus_per_actor=ray_gpus)
        except RayUnavailable as exc:
            _fail(str(exc))
        if not quiet:
            typer.echo(
                f"collect: {len(pset)} prompts x {len(specs)} models ({', '.join(s.name for s in specs)}), "
                f"grader {g.name}, sidecar {sidecar or sidecar_path(out)}{', on Ray' if runner else ''}",
                err=True,
            )
        try:
            report = asyncio.run(run_collect(pset.items, specs, g, out, progress=not quiet, sidecar=sidecar,
                                             runner=runner))
        except KeyboardInterrupt:
            typer.echo(f"\ninterrupted: finished cells are saved in {sidecar or sidecar_path(out)}; rerun the same command to resume", err=True)
            raise typer.Exit(130)
        except (CollectError, GraderError, TableError, RayUnavailable, OSError, RuntimeError) as exc:
            _fail(str(exc))
        retried = f", {report.retried} sent again after a worker died" if report.retried else ""
        typer.echo(f"wrote {report.out}: {report.rows} rows; {report.computed} cells computed, {report.reused} reused "
                   f"from the sidecar, {len(report.failed)} failed{retried}, {report.elapsed_s:.0f} s")
        for m in report.models:
            typer.echo(f"  {m:<24} accuracy {report.accuracy[m]:.3f}   mean cost ${report.mean_cost[m]:.3g}/request")
        if report.failed:
            for model, item, err in report.failed[:5]:
                typer.echo(f"  failed: {model} {item}: {err}", err=True)
            typer.echo("rerun the same command to retry the failed cells", err=True)
            raise typer.Exit(1)

    cascade_app = typer.Typer(help="Cascade routing: cheapest model first, escalate when it is unsure.", no_args_is_help=True)
    app.add_typer(cascade_app, name="cascade")

    @cascade_app.command("calibrate")
    def calibrate_cmd(
        table: Path = typer.Argument(..., help="table from `tierwise collect` (needs logprob|<model> columns)"),
        target: str = typer.Option("quality=0.95", "--target", "-t", help="quality=FRACTION of the top model, or cost=USD per request"),
        out: Path = typer.Option(Path("cascade.json"), "--out", "-o", help="thresholds file (.json or .yaml)"),
    ) -> None:
        """Pick per-model confidence thresholds that hit a target on a collected table."""
        from ..cascade import CascadeError, calibrate, load_cascade_table
        from ..router import ArtifactError, check_output_path
        from ..table import TableError

        try:
            check_output_path(out)
            t = load_cascade_table(table)
            th = calibrate(t, target)
        except (TableError, CascadeError, ArtifactError) as exc:
            _fail(str(exc))
        th.save(out)
        m = th.meta
        typer.echo(f"wrote {out}: {', '.join(f'{k}={_fmt(v)}' for k, v in zip(th.models[:-1], th.values))}")
        typer.echo(
            f"  on {m['rows']} rows: quality {m['expected_quality']:.3f} (top model {m['top_model_quality']:.3f}), "
            f"cost ${m['expected_cost_usd']:.3g}/request (top model ${m['top_model_cost_usd']:.3g}) [in-sample]"
        )

    @cascade_app.command("simulate")
    def simulate_cmd(
        table: Path = typer.Argument(..., help="collected table"),
        thresholds: Path = typer.Option(..., "--thresholds", help="file from `tierwise cascade calibrate`"),
    ) -> None:
        """Mean cost and quality of a cascade with given thresholds on a table (offline)."""
        from ..cascade import CascadeError, Thresholds, load_cascade_table, simulate
        from ..table import TableError

        try:
            th = Thresholds.load(thresholds)
            t = load_cascade_table(table)
            t = t.with_models(th.models) if t.models != th.models else t
            cost, quality = simulate(t, th)
        except (TableError, CascadeError) as exc:
            _fail(str(exc))
        typer.echo(f"{len(t)} rows: mean quality {quality:.4f}, mean cost ${cost:.4g}/request")


def _fmt(v: float) -> str:
    import math

    return "skip" if v == math.inf else "accept-all" if v == -math.inf else f"{v:.4f}"
