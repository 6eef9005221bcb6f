"""``tierwise keys add/list/revoke``: client keys with budgets and limits, stored hashed in the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _store(config: Optional[Path], log: Optional[str]):
    from ..config import ConfigError, Pyramid, default_pyramid
    from ..keystore import KeyStore

    try:
        target = log or (Pyramid.load(config) if config else default_pyramid()).log_target()
        return KeyStore(target)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Client keys kept in the database, with budgets and rate limits (stored hashed).",
                       no_args_is_help=True)
    app.add_typer(keys, name="keys")
    where = {"config": typer.Option(None, "--config", "-c", help="pyramid YAML (for its log database)"),
             "log": typer.Option(None, "--log", help="SQLite path or postgresql:// URL of the database")}

    @keys.command("add")
    def add(
        name: str = typer.Argument(..., help="a name for the key (shown in logs and the dashboard)"),
        usd_per_day: Optional[float] = typer.Option(None, help="budget per UTC day, USD"),
        usd_per_month: Optional[float] = typer.Option(None, help="budget per UTC month, USD"),
        rpm: Optional[int] = typer.Option(None, "--rpm", help="requests per minute"),
        tpm: Optional[int] = typer.Option(None, "--tpm", help="tokens per minute"),
        degrade_from: Optional[float] = typer.Option(0.8, help="budget fraction where routing turns cheaper"),
        admin: bool = typer.Option(False, help="may act on other keys' requests (feedback, dashboard)"),
        config: Optional[Path] = where["config"], log: Optional[str] = where["log"],
    ) -> None:
        """Make a key; it is printed once and only its hash is stored."""
        secret = _store(config, log).add(name, admin=admin, usd_per_day=usd_per_day, usd_per_month=usd_per_month,
                                         requests_per_min=rpm, tokens_per_min=tpm, degrade_from=degrade_from)
        typer.echo(secret)

    @keys.command("list")
    def list_(as_json: bool = typer.Option(False, "--json"), all_: bool = typer.Option(False, "--all",
              help="include revoked keys"), config: Optional[Path] = where["config"],
              log: Optional[str] = where["log"]) -> None:
        """The keys (names, limits, hashes; never the keys themselves)."""
        rows = [k.as_dict() for k in _store(config, log).list(live_only=not all_)]
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        for r in rows:
            lim = ", ".join(f"{k}={r[k]}" for k in ("usd_per_day", "usd_per_month", "requests_per_min",
                                                     "tokens_per_min") if r[k] is not None) or "no limits"
            state = "revoked" if r["revoked"] else ("admin" if r["admin"] else "live")
            typer.echo(f"{r['name']:20s} {state:8s} {r['key_hash'][:12]}  {lim}")

    @keys.command("revoke")
    def revoke(name: str = typer.Argument(...), config: Optional[Path] = where["config"],
               log: Optional[str] = where["log"]) -> None:
        """Revoke a key by name (every gateway re-reads the keys within seconds)."""
        n = _store(config, log).revoke(name)
        if not n:
            typer.echo(f"error: no live key named {name!r}", err=True)
            raise typer.Exit(2)
        typer.echo(f"revoked {n} key(s) named {name!r}")
