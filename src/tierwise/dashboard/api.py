"""The dashboard's JSON API (``/dashboard/api/...``): what the pages fetch every few seconds.

Every endpoint resolves its viewer first (:mod:`.access`: 401 without a valid key when keys are
configured, 403 from a non-loopback client when none are) and filters by it: a client key's
numbers, decisions and feedback are its own requests only. Ranges: ``range=1h|24h|7d|30d`` (ending
now) or ``from``/``to`` (Unix seconds). Answers are cached for a few seconds per viewer and range,
so many open tabs cost the database one query set.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..errors import RequestError
from ..gateway.responses import json_response
from . import decisions, quality, series, whatif
from .access import Access, Viewer
from .context import Context
from .overview import overview
from .sql import Reader, Scope, time_index

__all__ = ["Dashboard", "RANGES", "parse_range"]

RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
MAX_TIME = 253402300800.0  # 10000-01-01 UTC: from/to past it are no dates (and break the buckets' arithmetic)
TTL_S = {"overview": 2.0, "quality": 10.0, "whatif": 20.0, "keys": 30.0}


def parse_range(params: Any, now: float | None = None) -> tuple[float, float, str]:
    """``(t0, t1, label)`` from ``range`` or ``from``/``to`` query parameters (default: 24h)."""
    now = time.time() if now is None else now
    if params.get("from") or params.get("to"):
        try:
            t0 = float(params.get("from") or 0.0)
            t1 = float(params.get("to") or now)
        except ValueError:
            raise RequestError("from/to must be Unix times in seconds", param="from") from None
        if not (math.isfinite(t0) and math.isfinite(t1)):
            raise RequestError("from/to must be finite Unix times in seconds", param="from")
        for name, value in (("from", t0), ("to", t1)):
            if not 0.0 <= value <= MAX_TIME:
                raise RequestError(f"{name} must be a Unix time in seconds between 0 and {MAX_TIME:.0f} "
                                   "(the year 10000)", param=name)
        if t1 <= t0:
            raise RequestError("the range needs from < to", param="from")
        return t0, t1, "custom"
    label = params.get("range") or "24h"
    if label not in RANGES:
        raise RequestError(f"range must be one of {', '.join(RANGES)} (or from/to)", param="range")
    return now - RANGES[label], now + 1.0, label  # +1 s: a request logged this very second is in


class _Cache:
    def __init__(self) -> None:
        self._items: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, ttl: float, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = compute()
        with self._lock:
            if len(self._items) > 256:
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (now + ttl, value)
        return value


class Dashboard:
    """One dashboard over one log: reader, access rules, context, cache, and its two query threads."""

    def __init__(self, log_url: str, context: Context, access: Access):
        self.reader = Reader(log_url)
        self.context = context
        self.access = access
        self.cache = _Cache()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The overview's second query thread (started on first use, again after ``close``)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(2, thread_name_prefix="tierwise-dashboard")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        self.reader.close()

    # -- request helpers -----------------------------------------------------------------------

    def scope(self, request: Request, viewer: Viewer) -> tuple[Scope, dict[str, Any]]:
        t0, t1, label = parse_range(request.query_params)
        key = viewer.sees(request.query_params.get("key") or None)
        return Scope(t0, t1, key), {"t0": t0, "t1": t1, "label": label, "key": key}

    def cached(self, name: str, request: Request, viewer: Viewer, compute: Callable[[Scope], Any]) -> Response:
        scope, described = self.scope(request, viewer)
        label = described["label"]
        bounds = (scope.t0, scope.t1) if label == "custom" else label  # a relative range: cached by its name
        key = (name, viewer.admin, scope.key_hash, bounds, tuple(sorted(request.query_params.items())))
        body = self.cache.get(key, TTL_S[name], lambda: {"range": described, **compute(scope)})
        return json_response(body)

    # -- endpoints -----------------------------------------------------------------------------

    def register(self, app: FastAPI) -> None:
        @app.get("/dashboard/api/whoami")
        def whoami(request: Request) -> Response:
            v = self.access.viewer(request)
            return json_response({"admin": v.admin, "key": v.key_hash, "open": self.access.open,
                                  "context": self.context.describe(), "ranges": list(RANGES)})

        @app.get("/dashboard/api/overview")
        def overview_api(request: Request) -> Response:
            v = self.access.viewer(request)
            return self.cached("overview", request, v, lambda s: overview(
                self.reader, s, self.context.prices, self.context.breaker_state(), self.pool))

        @app.get("/dashboard/api/quality")
        def quality_api(request: Request) -> Response:
            v = self.access.viewer(request)
            thin = _float(request.query_params.get("thin"), 0.05, "thin", 0.0, 1.0)
            return self.cached("quality", request, v, lambda s: quality.quality(
                self.reader, s, series.bucket_step(s.t0, s.t1, 60), thin))

        @app.get("/dashboard/api/whatif")
        def whatif_api(request: Request) -> Response:
            v = self.access.viewer(request)
            return self.cached("whatif", request, v, self._whatif)

        @app.get("/dashboard/api/decisions")
        def decisions_api(request: Request) -> Response:
            v = self.access.viewer(request)
            scope, described = self.scope(request, v)
            q = request.query_params
            filters = decisions.Filters(
                model=q.get("model") or None, status=_status(q.get("status")), key=scope.key_hash,
                surface=q.get("surface") or None, fallbacks=q.get("fallbacks") == "1",
                cascade=q.get("cascade") == "1", search=(q.get("q") or "").strip() or None)
            number = int(_float(q.get("page"), 0, "page", 0, 1e6))
            size = int(_float(q.get("size"), 50, "size", 1, 1000))
            body = decisions.page(self.reader, Scope(scope.t0, scope.t1), filters, number, size)
            return json_response({"range": described, **body, "store_prompts": self.context.store_prompts})

        @app.get("/dashboard/api/decisions/{request_id}")
        def decision_api(request_id: str, request: Request) -> Response:
            v = self.access.viewer(request)
            row = decisions.detail(self.reader, request_id, v.sees(None))
            if row is None:
                raise RequestError(f"no request '{request_id}' in the log", status=404, code="not_found")
            return json_response({**row, "store_prompts": self.context.store_prompts})

        @app.get("/dashboard/api/keys")
        def keys_api(request: Request) -> Response:
            v = self.access.viewer(request)
            if not v.admin:
                return json_response({"keys": [{"key_hash": v.key_hash, "name": None}]})
            return json_response(self.cache.get(("keys",), TTL_S["keys"], self._keys))

    def _keys(self) -> dict[str, Any]:
        """Every client key in the log, named when ``tierwise keys`` made it."""
        names = {}
        try:
            from ..keystore import KeyStore

            names = {k.key_hash: k.name for k in KeyStore(self.reader.url).list()}
        except Exception:  # a log without a key table, or one we may not write to: hashes only
            pass
        return {"keys": [{"key_hash": h, "name": names.get(h)} for h in self.reader.distinct("key_hash")]}

    def _whatif(self, scope: Scope) -> dict[str, Any]:
        knob, source = self.context.knob, self.context.knob_source
        if knob is None:
            knob, source = _latest_knob(self.reader, scope, self.context.rule), "latest logged request"
        out = whatif.whatif(self.reader, scope, self.context.tiers, self.context.rule, knob)
        out["current_knob_source"] = source
        return out


def _float(raw: str | None, default: float, name: str, lo: float, hi: float) -> float:
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RequestError(f"{name} must be a number", param=name) from None
    if not (lo <= value <= hi):
        raise RequestError(f"{name} must be in [{lo:g}, {hi:g}]", param=name)
    return value


def _status(raw: str | None) -> str | None:
    if not raw:
        return None
    if raw in ("ok", "error"):
        return raw
    if not (raw.isascii() and raw.isdigit() and len(raw) == 3 and 100 <= int(raw) <= 599):
        raise RequestError("status must be ok, error or an HTTP status code (100-599)", param="status")
    return raw


def _latest_knob(reader: Reader, scope: Scope, rule: str) -> float | None:
    where, params = scope.where()
    rows = reader.query(f"SELECT knob FROM requests{reader.index(time_index(scope))} WHERE {where} AND rule = ? "
                        "AND knob IS NOT NULL ORDER BY ts DESC LIMIT 1", [*params, rule])
    return float(rows[0][0]) if rows and math.isfinite(float(rows[0][0])) and rows[0][0] < 1e300 else None
