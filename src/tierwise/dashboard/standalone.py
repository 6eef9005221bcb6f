"""``tierwise dashboard``: the dashboard alone, over any decision log (SQLite file or Postgres URL),
with the keys of a pyramid config (its ``api_keys`` / ``admin_keys`` / ``keys:`` and the keys in
the database, re-read as the gateway does) and its prices; no models are started.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from ..errors import RequestError, TierwiseError
from ..gateway.responses import error_response
from . import mount
from .access import Access
from .context import Context

__all__ = ["create_app"]


def create_app(log_url: str, context: Context, keys: Any = None) -> FastAPI:
    """``keys``: a :class:`tierwise.gateway.keys.Keys` (None: no keys, localhost only)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if keys is None:
            yield
        else:
            async with keys.running():
                yield
        await asyncio.to_thread(app.state.dashboard.close)

    app = FastAPI(title="tierwise dashboard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(TierwiseError)
    async def _tierwise_error(request: Request, exc: TierwiseError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(RequestError(f"{request.method} {request.url.path}: {exc.detail}",
                                           status=exc.status_code, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> Response:
        return error_response(TierwiseError(f"internal error: {type(exc).__name__}"))

    @app.get("/")
    def root() -> Response:
        return RedirectResponse("/dashboard", 307)

    mount(app, log_url, context, Access(None if keys is None else keys.guard, log_url))
    return app
