"""``tierwise serve`` (the OpenAI-compatible gateway), ``tierwise log`` and ``tierwise stats``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _pyramid(config: Optional[Path]):
    from ..config import ConfigError, Pyramid, default_pyramid

    try:
        return Pyramid.load(config) if config is not None else default_pyramid()
    except (ConfigError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _log_target(config: Optional[Path], log: Optional[str]) -> str:
    """The decision log's path or URL (a SQLite path that does not exist: a usage error, exit 2)."""
    target = log or _pyramid(config).log_target()
    if not _is_postgres(target) and not Path(target).exists():
        _fail(f"{target}: no decision log yet (run `tierwise serve` first, or pass --log)")
    return target


def _is_postgres(target: str) -> bool:
    return target.startswith(("postgres://", "postgresql://"))


def _open_log(config: Optional[Path], log: Optional[str]):
    from ..decision_log import LogError, open_log

    target = _log_target(config, log)
    try:
        return open_log(target)
    except LogError as exc:
        _fail(str(exc))


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="pyramid YAML (default: the embedded local pyramid)"),
        host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0 exposes it; set api_keys then)"),
        port: int = typer.Option(8000, help="TCP port"),
        router: Optional[Path] = typer.Option(None, "--router", help="router artifact (overrides the pyramid's)"),
        cascade: Optional[Path] = typer.Option(
            None, "--cascade",
            help="thresholds from `tierwise cascade calibrate` (overrides the pyramid's `cascade:`); serves "
                 "model 'tierwise:cascade', and plain 'tierwise' too when no trained router is loaded"),
        log_prompts: bool = typer.Option(False, "--log-prompts", help="store prompt text in the log (for training from feedback)"),
        log_level: str = typer.Option("warning", help="uvicorn log level"),
        workers: int = typer.Option(1, "--workers", min=1, help="processes sharing the port (each loads its own "
                                    "local models; per-key limits across workers need `redis:` in the YAML)"),
    ) -> None:
        """Run the OpenAI-compatible gateway: POST /v1/chat/completions with model 'tierwise'."""
        import uvicorn

        from ..errors import TierwiseError
        from ..gateway import factory
        from ..gateway._http import IMPORT_PATH as HTTP

        _pyramid(config)  # a bad file is a usage error (exit 2) naming the file
        opts = factory.ServeOptions(str(config) if config else None, str(router) if router else None,
                                    str(cascade) if cascade is not None else None, log_prompts, workers)
        try:
            if workers > 1:
                info = factory.check_workers(opts, workers)
                app_ = None
            else:
                app_ = factory.build(opts)
                eng, guard = app_.state.engine, app_.state.guard
                info = {"models": eng.order, "router": eng.router.name + (" (deciding in its own process)" if
                                                                     eng.batcher.remote is not None else ""),
                        "log": app_.state.log.url,
                        "keys": len(guard.api_keys), "admin": len(guard.admin_keys), "redis": None}
                if eng.cascade is not None:
                    info["cascade"] = eng.cascade.source + (" (also for model 'tierwise')" if eng.cascade_default else "")
        except (TierwiseError, ValueError, OSError, RuntimeError) as exc:
            _fail(str(exc))
        if info["keys"]:
            auth = f"auth: on ({info['keys']} key(s), {info['admin']} admin) for every /v1 endpoint; " \
                   "/health and /metrics are open; /dashboard: sign in with a key"
        else:
            auth = "auth: OFF: every endpoint answers anyone (open gateway; keep it on 127.0.0.1); " \
                   "/dashboard answers localhost only"
            if host not in ("127.0.0.1", "localhost", "::1"):
                auth += f"  WARNING: listening on {host} without api_keys"
        casc = f"  cascade: {info['cascade']}" if info.get("cascade") else ""
        shared = f"  workers: {workers}" + (f" (counters in {info['redis']})" if info["redis"] else "")
        typer.echo(f"tierwise gateway on http://{host}:{port}/v1  models: {', '.join(info['models'])}  "
                   f"router: {info['router']}{casc}  log: {info['log']}  {auth}{shared}", err=True)
        if app_ is not None:
            uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=False,
                        timeout_graceful_shutdown=30, http=HTTP)
            return
        factory.export(opts)
        uvicorn.run("tierwise.gateway.factory:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level, access_log=False, timeout_graceful_shutdown=30, http=HTTP)

    @app.command("log")
    def log_cmd(
        last: int = typer.Option(20, "--last", "-n", min=0, help="how many recent requests"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="pyramid YAML (for its log path)"),
        log: Optional[str] = typer.Option(None, "--log", help="SQLite path or postgresql:// URL"),
        verify: bool = typer.Option(False, "--verify", help="check the log's integrity and schema instead: exit 0 "
                                    "if sound, 1 if damaged (a SQLite file that cannot even be opened included), "
                                    "2 if there is no log at that path or the database cannot be reached"),
    ) -> None:
        """Show the latest routing decisions (or, with --verify, check the log)."""
        if verify:
            from ..decision_log import LogError, open_log

            target = _log_target(config, log)
            try:
                opened = open_log(target)
            except LogError as exc:
                if _is_postgres(target):  # unreachable, not damaged: nothing was checked
                    _fail(str(exc))
                report = {"ok": False, "url": target, "problems": [str(exc)]}  # the file exists: damaged
            else:
                report = opened.verify()
                opened.close()
            if as_json:
                typer.echo(json.dumps(report))
            else:
                state = "ok" if report["ok"] else "DAMAGED"
                typer.echo(f"{report['url']}: {state}; {report.get('rows', '?')} requests, "
                           f"{report.get('feedback', '?')} ratings")
                for p in report["problems"]:
                    typer.echo(f"  problem: {p}")
            raise typer.Exit(0 if report["ok"] else 1)
        opened = _open_log(config, log)
        rows = opened.rows(last=last)
        if as_json:
            for r in rows:
                typer.echo(json.dumps(r))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"last {len(rows)} requests")
        for col in ("time", "id", "requested", "model", "score", "fallbacks", "in/out", "ms", "USD", "status"):
            t.add_column(col)
        import time as _time

        for r in rows:
            score = r["scores"].get(r["model"]) if r["model"] else None
            path = "->".join(f["model"] for f in r["fallbacks"])
            if r.get("cascade_chain"):  # cascade: its path, score = the kept answer's confidence
                path = "cascade " + "->".join(s["model"] for s in r["cascade_chain"])
                score = next((s["confidence"] for s in r["cascade_chain"] if s["outcome"] == "kept"), None)
            t.add_row(
                _time.strftime("%H:%M:%S", _time.localtime(r["ts"])), r["id"][-12:], r["requested_model"] or "",
                r["model"] or "-", "" if score is None else f"{score:.2f}",
                path, f"{r['tokens_in']}/{r['tokens_out']}",
                f"{r['latency_ms']:.0f}", f"{r['cost_usd']:.6f}", str(r["status"]),
            )
        Console().print(t)

    @app.command()
    def stats(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="pyramid YAML (prices and log path)"),
        log: Optional[str] = typer.Option(None, "--log", help="SQLite path or postgresql:// URL"),
        as_json: bool = typer.Option(False, "--json", help="print the numbers as JSON"),
    ) -> None:
        """Traffic share, fallbacks, latency, and money saved versus always using the priciest model."""
        from ..decision_log import summarize

        pyramid = _pyramid(config)
        prices = {m.name: (m.input_per_1m, m.output_per_1m) for m in pyramid.chat_models}  # the baseline's tiers
        s = summarize(_open_log(config, log).rows(), prices)
        if s.get("unpriced_models"):
            whose = str(config) if config is not None else "the embedded default pyramid"
            typer.echo(f"warning: the log's models {', '.join(s['unpriced_models'])} have no price in {whose}, so "
                       "there is no savings baseline; pass --config with the pyramid that served them", err=True)
        if as_json:
            typer.echo(json.dumps(s, indent=1))
            return
        from rich.console import Console
        from rich.table import Table

        con = Console()
        if not s["requests"]:
            con.print("no requests logged yet")
            return
        t = Table(title=f"{s['answered']} answered of {s['requests']} requests")
        for col in ("model", "share", "requests", "tokens in", "tokens out", "USD"):
            t.add_column(col, justify="right")
        for name, m in s["models"].items():
            t.add_row(name, f"{m['share']:.1%}", str(m["requests"]), str(m["tokens_in"]), str(m["tokens_out"]),
                      f"{m['cost_usd']:.6f}")
        con.print(t)

        def ms(v):
            return "-" if v is None else f"{v:.1f} ms"

        con.print(f"status: {s['status']}   fallbacks: {s['fallbacks']} in {s['fallback_requests']} requests")
        con.print("surfaces: " + ", ".join(f"{k} {v}" for k, v in s.get("surfaces", {}).items()))
        con.print(f"latency p50 {ms(s['latency_ms_p50'])}  p99 {ms(s['latency_ms_p99'])}   "
                  f"routing p50 {ms(s['route_ms_p50'])}  p99 {ms(s['route_ms_p99'])}")
        forwarded = s.get("forwarded_cost_usd") or 0.0
        unanswered = s.get("unanswered_cost_usd") or 0.0
        routed_cost = s["cost_usd"] - forwarded - unanswered  # answered routed requests: what the baseline prices
        if s["baseline_cost_usd"] is not None:
            frac = "" if s["saved_fraction"] is None else f" ({s['saved_fraction']:.1%})"
            con.print(f"cost ${routed_cost:.6f}  vs always {s['baseline_model']} "
                      f"${s['baseline_cost_usd']:.6f}: saved ${s['saved_usd']:.6f}{frac}")
        else:
            con.print(f"cost ${routed_cost:.6f} (answered routed requests; no baseline)")
        if forwarded or any(k in s.get("surfaces", {}) for k in ("embeddings", "completions")):
            con.print(f"forwarded (embeddings, completions; not in the baseline): ${forwarded:.6f}")
        if unanswered:
            con.print(f"spent on requests that got no answer (not in the baseline): ${unanswered:.6f}")
        con.print(f"total spend ${s['cost_usd']:.6f}")
