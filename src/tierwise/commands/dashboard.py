"""``tierwise dashboard``: the web dashboard served alone over a decision log."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def dashboard(
        log: Optional[str] = typer.Option(None, "--log", help="SQLite path or postgresql:// URL (default: the "
                                          "pyramid's `log:`)"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="pyramid YAML: prices, rule and knob, "
                                              "and the keys that may sign in (default: the embedded local pyramid)"),
        host: str = typer.Option("127.0.0.1", help="interface to listen on"),
        port: int = typer.Option(8001, help="TCP port"),
        log_level: str = typer.Option("warning", help="uvicorn log level"),
    ) -> None:
        """Serve the dashboard (traffic, savings, quality, knob what-if, decisions) over any decision log."""
        import uvicorn

        from ..dashboard.context import from_pyramid
        from ..dashboard.standalone import create_app
        from ..errors import TierwiseError
        from ..gateway._http import header_timeout
        from ..gateway.keys import Keys
        from .gateway import _fail, _open_log, _pyramid

        pyramid = _pyramid(config)
        opened = _open_log(config, log)  # migrates the log: the dashboard's indexes are built here, once
        url = opened.url
        opened.close()
        try:
            keys = Keys(pyramid, url)
            app_ = create_app(url, from_pyramid(pyramid), keys)
        except (TierwiseError, ValueError, OSError) as exc:
            _fail(str(exc))
        guard = keys.guard
        if guard.open:
            auth = "no keys configured: answers localhost only"
            if host not in ("127.0.0.1", "localhost", "::1"):
                auth += f" (listening on {host}: other machines get 403; set api_keys/admin_keys to open it)"
        else:
            auth = f"sign in with a key ({len(guard.api_keys)} key(s), {len(guard.admin_keys)} admin; admins see " \
                   "every request, client keys their own)"
        typer.echo(f"tierwise dashboard on http://{host}:{port}/dashboard  log: {url}  {auth}", err=True)
        uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=False,
                    http=header_timeout(pyramid.header_timeout_s))
