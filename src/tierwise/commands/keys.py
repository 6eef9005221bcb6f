"""``tierwise keys add/list/revoke``: client keys with budgets and limits, stored hashed in the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


# the options of `keys add` by the KeyConfig field they set (its errors name the field)
_OPTION = {"name": "NAME", "usd_per_day": "--usd-per-day", "usd_per_month": "--usd-per-month",
           "requests_per_min": "--rpm", "tokens_per_min": "--tpm", "degrade_from": "--degrade-from"}


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _pyramid(config: Optional[Path]):
    from ..config import ConfigError, Pyramid, default_pyramid

    try:
        return Pyramid.load(config) if config else default_pyramid()
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))


def _store(config: Optional[Path], log: Optional[str]):
    from ..config import ConfigError
    from ..keystore import KeyStore

    try:
        return KeyStore(log or _pyramid(config).log_target())
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))


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
        from ..errors import ConfigError
        from ..keystore import checked_policy

        limits = dict(usd_per_day=usd_per_day, usd_per_month=usd_per_month, requests_per_min=rpm,
                      tokens_per_min=tpm, degrade_from=degrade_from)
        try:  # the rules of the YAML's keys: entries, before the database is touched
            policy = checked_policy(name, admin=admin, **limits)
            secret = _store(config, log).add(name, admin=admin, **limits)
        except ConfigError as exc:
            opt = _OPTION.get(exc.param or "")
            _fail(f"{opt}{str(exc)[len(exc.param):]}" if opt and str(exc).startswith(f"{exc.param}:") else str(exc))
        typer.echo(secret)
        if policy.limited and config is not None and not _pyramid(config).redis:
            typer.echo(f"note: {config} has no `redis:`: a gateway running it with --workers > 1 refuses this "
                       "key's requests (503 quota_unavailable), as it could not keep its limits exact across "
                       "workers; one worker enforces them", err=True)

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
            _fail(f"no live key named {name!r}")
        typer.echo(f"revoked {n} key(s) named {name!r}")
