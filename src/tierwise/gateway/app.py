"""The OpenAI-compatible gateway app: routes that parse, call the engine, and encode.

``POST /v1/chat/completions`` (stream and not), ``GET /v1/models`` and ``/v1/models/{id}``,
``POST /v1/feedback``, ``GET /health``, ``GET /metrics``. Every error is OpenAI's JSON shape with
the right status, never a traceback; an upstream's rejection of the request is passed back as-is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .. import dashboard
from ..decision_log import DecisionLog, open_log
from ..engine.engine import Engine
from ..engine.plan import CASCADE, ROUTED
from ..engine.request import validation_error
from ..errors import ModelNotFound, RequestError, TierwiseError
from . import openai_route, passthrough, surfaces
from .keys import Keys
from .metrics import Metrics
from .responses import error_response, json_response


class _Feedback(BaseModel):
    """Validated like a chat request: strictly (``"0.5"`` and ``true`` are not scores)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str = Field(min_length=1, max_length=256)
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)


def model_list(engine: Engine) -> list[dict[str, Any]]:
    """``/v1/models`` entries: the routed names first, then every pyramid model."""
    created = int(time.time())
    routed_by = "cascade" if engine.cascade_default else getattr(engine.router, "name", None)
    data = [{"id": ROUTED, "object": "model", "created": created, "owned_by": "tierwise", "router": routed_by}]
    if engine.cascade is not None:
        data.append({"id": CASCADE, "object": "model", "created": created, "owned_by": "tierwise",
                     "router": "cascade", "confidence": engine.cascade.thresholds.confidence,
                     "thresholds": engine.cascade.source})
    for s in engine.slots:
        data.append({"id": s.name, "object": "model", "created": created, "owned_by": "tierwise",
                     "context_window": s.context_window, "capabilities": sorted(s.capabilities),
                     "price_per_1m": {"input": s.input_per_1m, "output": s.output_per_1m}})
    return data


def create_app(pyramid: Any, *, router: Any = None, backends: dict | None = None, log: DecisionLog | None = None,
               store_prompts: bool = False, max_pending: int | None = None, cascade: Any = None,
               cascade_default: bool | None = None, engine: Engine | None = None,
               router_process: bool | None = None) -> FastAPI:
    """The gateway for a loaded pyramid (or a ready ``engine``). The app closes the log and the
    backends on shutdown, so queued log rows are written before the process exits."""
    if engine is None:
        engine = Engine.from_pyramid(pyramid, router=router, backends=backends, cascade=cascade,
                                     cascade_default=cascade_default, store_prompts=store_prompts,
                                     max_pending=max_pending, router_process=router_process)
    if log is None:
        log = open_log(pyramid.log_target(), store_prompts=store_prompts)
    metrics = Metrics()
    engine.listeners += [metrics.observe, log.record]
    keys = Keys(pyramid, log.url)
    guard = keys.guard
    engine.quota = keys.quota  # policies may arrive later (tierwise keys add): always consulted

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with keys.running():
            yield
        await engine.aclose()
        await asyncio.to_thread(log.close)

    app = FastAPI(title="tierwise gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.log, app.state.guard = engine, log, guard

    @app.exception_handler(TierwiseError)
    async def _tierwise_error(request: Request, exc: TierwiseError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(RequestError(f"{request.method} {request.url.path}: {exc.detail}",
                                           status=exc.status_code, code=kind))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(RequestError(str(exc.errors()[0].get("msg")), status=422))

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> Response:
        return error_response(TierwiseError(f"internal error: {type(exc).__name__}"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await openai_route.answer(request, guard, engine.handle)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        guard.check_auth(request)
        return json_response({"object": "list", "data": model_list(engine)})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> Response:
        guard.check_auth(request)
        for m in model_list(engine):
            if m["id"] == model_id:
                return json_response(m)
        try:
            kind, spec = engine.check_model(model_id)  # a routed name with a knob: tierwise:0.5
        except RequestError:
            kind, spec = None, None
        if kind == "routed" and spec is not None:
            return json_response({**model_list(engine)[0], "id": model_id, "knob": spec})
        raise ModelNotFound(f"model '{model_id}' does not exist", param="model")

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        client = guard.check_auth(request)
        guard.check_json(request)  # 415 for a body sent as anything but JSON, as chat does
        raw = await guard.read_body(request)
        try:
            fb = _Feedback.model_validate_json(raw)
        except ValidationError as exc:
            raise validation_error(exc) from None
        found = await asyncio.wrap_future(log.add_feedback(fb.request_id, fb.score, key_hash=client.key_hash,
                                                           admin=client.admin))
        if not found:
            raise RequestError(f"unknown request_id '{fb.request_id}'", status=404, param="request_id",
                               code="not_found")
        return json_response({"object": "feedback", "request_id": fb.request_id, "score": fb.score})

    @app.get("/health")
    async def health() -> Response:
        logged = log.health()
        breakers = {sl.name: sl.breaker.as_dict() for sl in engine.slots}
        dead = all(b["state"] == "open" for b in breakers.values())
        # per-key counters: degraded while Redis is unreachable or limited keys are refused for want of it
        quota = await engine.quota.health() if engine.quota is not None else None
        degraded = logged["status"] != "ok" or dead or (quota is not None and quota["status"] != "ok")
        body = {"status": "degraded" if degraded else "ok",
                "models": engine.order, "router": getattr(engine.router, "name", None),
                "cascade": engine.cascade.source if engine.cascade else None,
                "routed_model_uses": "cascade" if engine.cascade_default else "router",
                "in_flight": engine.pending, "log": logged["error"] or logged["status"],
                "log_health": logged, "breakers": breakers}
        if quota is not None:
            body["quota"] = quota
        return json_response(body)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        metrics.refresh(engine, log)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    surfaces.anthropic.register(app, engine, guard)  # POST /v1/messages (+ count_tokens), Anthropic's shape
    surfaces.responses.register(app, engine, guard, log, ttl_days=getattr(pyramid, "responses_ttl_days", None))
    passthrough.register(app, engine, guard)  # POST /v1/embeddings, POST /v1/completions (one model, not routed)
    dashboard.register(app, engine, guard, log)  # GET /dashboard (+ /dashboard/api/*): docs/dashboard.md
    return app

