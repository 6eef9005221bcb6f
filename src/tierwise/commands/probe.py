"""Onboarding a model from a few probes: ``tierwise probe select`` and ``tierwise train --add-model``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def add_model(router_path: Optional[Path], name: str, probe: Optional[Path], out: Path, prices: Optional[Path]) -> None:
    """``tierwise train --router R --add-model NAME --probe TABLE --out R2``: place NAME from its probe outcomes."""
    from ..onboarding import add_model as place_model
    from ..prices import PriceError
    from ..router import ArtifactError, Router, check_output_path
    from ..table import TableError, load_table

    if router_path is None or probe is None:
        _fail("--add-model needs --router (the trained router) and --probe (a table with the new model's outcomes)")
    try:
        check_output_path(out)
    except ArtifactError as exc:
        _fail(f"--out {exc}")
    try:
        router = Router.load(router_path)
        if name in router.models:
            _fail(f"{router_path}: the router already has a model {name!r} ({', '.join(router.models)}); "
                  "give the new model another name")
        table = load_table(probe, prices)
        summary = place_model(router, table, name)
    except (ArtifactError, TableError, PriceError, ValueError) as exc:
        _fail(str(exc))
    try:
        router.save(out)
    except (OSError, ArtifactError) as exc:
        _fail(f"--out {out}: {exc}" if isinstance(exc, OSError) else str(exc))
    if "warning" in summary:
        typer.secho(f"warning: {summary['warning']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {out}: {router.name} over {router.models} ({name} placed from {summary['probes']} probes; "
               "the calibration curve predates it: retrain on a full table to recalibrate)", err=True)
    best = summary["best_quality_knob"]
    if best["serves_new"]:
        typer.echo(f"{name} beat {best['incumbent']} on the same {best['probes']} probes ({best['new_quality']:.3f} vs "
                   f"{best['incumbent_quality']:.3f}): the best-quality knob now serves {name} alone", err=True)
    elif "why_not" in best:
        typer.echo(f"note: {best['why_not']}", err=True)
    typer.echo(json.dumps(summary, indent=1))


def register(app: typer.Typer) -> None:
    probe = typer.Typer(help="Probe prompts for placing a new model into a trained router.", no_args_is_help=True)
    app.add_typer(probe, name="probe")

    @probe.command("select")
    def select_cmd(
        router_path: Path = typer.Argument(..., help="Trained router artifact (.tw)."),
        prompts: Path = typer.Argument(..., help="Candidate prompts: JSONL/CSV with a 'prompt' (or 'question') column, "
                                       "e.g. the router's training table."),
        k: int = typer.Option(50, "-k", "--k", min=1, help="How many probes to pick."),
        out: Optional[Path] = typer.Option(None, help="Write the picked rows here (JSONL); default stdout."),
    ) -> None:
        """Pick the K prompts whose outcomes place a new model best (most informative first): run the new
        model on them, grade, then `tierwise train --router R --add-model NAME --probe graded.csv`."""
        from ..onboarding import recorded_incumbent, select
        from ..router import ArtifactError, Router, check_output_path
        from ..table import TableError, load_prompts

        if out is not None:
            try:
                check_output_path(out)  # before the router and prompts are read
            except ArtifactError as exc:
                _fail(f"--out {exc}")
        try:
            router = Router.load(router_path)
            records = load_prompts(prompts)
        except (ArtifactError, TableError) as exc:
            _fail(str(exc))
        if k > len(records):
            typer.secho(f"warning: {prompts} has {len(records)} candidate prompts, fewer than -k {k}: all "
                        f"{len(records)} are probes", fg=typer.colors.YELLOW, err=True)
        picked = select(router, [r["prompt"] for r in records], k)
        lines = "".join(json.dumps({**records[i], "probe_rank": rank}, default=str) + "\n" for rank, i in enumerate(picked))
        if out is None:
            sys.stdout.write(lines)
        else:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(lines)
            except OSError as exc:
                _fail(f"--out {out}: {exc}")
            typer.echo(f"wrote {len(picked)} probes to {out}", err=True)
        incumbent = recorded_incumbent(router)
        column = f"correct|{incumbent}"
        if incumbent and all(column in records[i] for i in picked):
            typer.echo(f"the probes carry {column} from {prompts.name}: grade the new model on them, and --add-model "
                       f"lets it take the best-quality knob if it beats {incumbent}", err=True)
        elif incumbent:
            typer.echo(f"grade the new model on these prompts; grade {incumbent} ({column}) on them too to let the new "
                       "model take the best-quality knob if it beats it", err=True)
