"""The dashboard's pages: the single-page app and its files (served from the package, nothing from
the network), and the sign-in form that turns a key into a session cookie (:mod:`.access`).

Every file, not only the data, needs a viewer: without one, ``/dashboard`` answers 401 with the
sign-in form (self-contained: no script, no other file; a browser's navigation is sent to
``/dashboard/login`` instead), or 403 off localhost on an open gateway.
"""

from __future__ import annotations

import asyncio
import html
from importlib import resources
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..config import DEFAULT_BODY_TIMEOUT_S
from ..errors import AuthError, RequestError
from .access import COOKIE, SESSION_S, Access

__all__ = ["register"]

_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}
# the page may load its own files only: no inline script, nothing from another origin
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"content-security-policy": _CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
            "cache-control": "no-store"}

_SIGN_IN = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>tierwise dashboard: sign in</title>
<link rel="icon" href="data:,">
<style>body{{font:15px system-ui,sans-serif;background:#f4f5f7;color:#1d2330;display:grid;place-items:center;
min-height:100vh;margin:0}}form{{background:#fff;padding:28px;border-radius:10px;box-shadow:0 1px 4px #0002;
width:min(360px,90vw)}}h1{{font-size:19px;margin:0 0 6px}}p{{color:#5b6472;margin:0 0 16px}}
input{{width:100%;box-sizing:border-box;padding:9px;font:inherit;border:1px solid #c9ced6;border-radius:6px}}
button{{margin-top:12px;width:100%;padding:9px;font:inherit;border:0;border-radius:6px;background:#2f5bd3;
color:#fff;cursor:pointer}}.err{{color:#b3261e}}</style></head><body>
<form method="post" action="/dashboard/login"><h1>tierwise dashboard</h1>
<p>Sign in with an API key. Admin keys see every request; client keys their own.</p>{error}
<input type="password" name="key" placeholder="API key" autocomplete="current-password" autofocus required
aria-label="API key"><button type="submit">Sign in</button></form></body></html>"""


_FORM_LIMIT = 8192  # bytes of the sign-in form


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of ``static/`` (read once): name -> (bytes, content type)."""
    root = resources.files("tierwise.dashboard") / "static"
    files = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return files


# the sign-in page is one self-contained file: its own inline style, no script at all
_SIGN_IN_HEADERS = {**_HEADERS, "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
                    "img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"}


def _sign_in(error: str = "", status: int = 401) -> HTMLResponse:
    note = f'<p class="err" role="alert">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(_SIGN_IN.format(error=note), status, headers=_SIGN_IN_HEADERS)


def _refused(exc: RequestError) -> Response:
    body = f"<!doctype html><title>tierwise dashboard</title><p>{html.escape(exc.message)}</p>"
    return HTMLResponse(body, exc.status, headers=_HEADERS)


def register(app: FastAPI, access: Access) -> None:
    files = _static_files()

    def page(name: str, request: Request) -> Response:
        try:
            access.viewer(request)
        except AuthError:
            if name == "index.html" and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/dashboard/login", 303)  # a browser: to the form (scripts get the 401)
            return _sign_in()
        except RequestError as exc:
            return _refused(exc)
        body, kind = files[name]
        return Response(body, 200, headers=_HEADERS, media_type=kind)

    @app.get("/dashboard")
    def index(request: Request) -> Response:
        return page("index.html", request)

    @app.get("/dashboard/")
    def index_slash(request: Request) -> Response:
        return page("index.html", request)

    @app.get("/dashboard/static/{name}")
    def static(name: str, request: Request) -> Response:
        if name not in files:
            raise RequestError(f"no dashboard file {name!r}", status=404, code="not_found")
        return page(name, request)

    @app.get("/dashboard/login")
    def sign_in_form(request: Request) -> Response:
        if access.open:
            return RedirectResponse("/dashboard", 303)
        return _sign_in(status=200)

    @app.post("/dashboard/login")
    async def sign_in(request: Request) -> Response:
        if access.open:
            return RedirectResponse("/dashboard", 303)
        # a urlencoded form of one short field (no multipart parser needed), within the gateway's body
        # deadline: a client that stops sending mid-body gets a 408, not a connection held forever
        timeout = access.guard.body_timeout_s if access.guard is not None else DEFAULT_BODY_TIMEOUT_S
        raw = b""
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.stream():
                    raw += chunk
                    if len(raw) > _FORM_LIMIT:
                        return _sign_in("That form is too large.", 413)
        except TimeoutError:
            late = _sign_in(f"The form was not received within {timeout:g}s.", 408)
            late.headers["connection"] = "close"  # the rest of the body is not waited for
            return late
        key = parse_qs(raw.decode("utf-8", "replace")).get("key", [""])[0]
        cookie = access.sign_in(key)
        if cookie is None:
            return _sign_in("That key is not valid here.")
        out = RedirectResponse("/dashboard", 303)
        out.set_cookie(COOKIE, cookie, max_age=SESSION_S, path="/dashboard", httponly=True, samesite="strict",
                       secure=request.url.scheme == "https")
        return out

    @app.post("/dashboard/logout")
    def sign_out() -> Response:
        out = RedirectResponse("/dashboard/login", 303)
        out.delete_cookie(COOKIE, path="/dashboard")
        return out
