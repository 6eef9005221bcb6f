"""``tierwise`` command line. Each area registers its commands from ``tierwise.commands.<area>``."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="tierwise",
    help="Route each LLM request to the cheapest model of your pyramid that is likely to answer it well.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("core", "probe", "models", "gateway", "owndata", "keys", "dashboard")

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"tierwise.commands.{_name}")
    except ModuleNotFoundError as exc:  # an area not built yet must not break the others
        if exc.name != f"tierwise.commands.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    """The console entry point: any tierwise error a command did not report itself is one line
    (``error: <message>``, exit 2), never a traceback; the errors module is the one mapping."""
    from .errors import TierwiseError

    try:
        app()
    except TierwiseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # python -m tierwise.cli
    main()
