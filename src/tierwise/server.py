"""The OpenAI-compatible gateway: route each chat request to the cheapest model likely to answer well.

Drop-in for any OpenAI client: ``model="tierwise"`` routes with the pyramid's default knob,
``model="tierwise:<knob>"`` with another knob, and a pyramid model's own name bypasses routing.
The answer says which model answered (``model`` field, ``x-tierwise-*`` headers) and every request
lands in the decision log.

``model="tierwise:cascade"`` runs the confidence cascade (:mod:`tierwise.cascade`) when the pyramid
has calibrated thresholds (``cascade:`` in the YAML or ``serve --cascade``); plain ``tierwise`` uses
it too when no trained router is loaded, since calibrated thresholds beat the untrained stand-in.
The cascade logic stays in cascade.py: the gateway only wraps each model call in its own rules
(slots, timeouts, context check, failure records) and shapes the answer like a routed one.

Reliability rules, in order: models whose context window cannot hold prompt + ``max_tokens`` are
never tried; each attempt has the model's own timeout (queue wait and generation each); an error or
timeout before the first streamed token falls back to the next model up the pyramid (then, if the
top fails too, to the cheaper ones left), and the chain is logged; once a token has been sent the
stream cannot change model, so a later failure ends it with an OpenAI-style error event. Every error
the client sees is OpenAI's JSON shape, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from .backends.base import Backend, BackendError, ChatResult, StreamDelta
from .cascade import CascadeError, CascadeModel, CascadeRouter, Thresholds
from .decision import Decision
from .decision_log import DecisionLog, RequestRecord, prompt_hash

ROUTED = "tierwise"
CASCADE = "tierwise:cascade"
# Request ids: 128 random bits from a generator seeded once from the OS. uuid4() reads os.urandom
# on every call, which is a slow syscall in some sandboxes (0.3-0.7 ms measured) on the hot path.
_ids = random.Random()
DEFAULT_MAX_TOKENS = 256  # when the client sends none; also what the context-window check reserves
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_PENDING = 1024  # requests waiting or running at once; past it: 503 at once, not a hang


# -- errors ---------------------------------------------------------------------------------


class APIError(Exception):
    """An error the client should see, in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, extra_headers: dict[str, str] | None = None) -> Response:
        return _json(self.body(), self.status, {**self.headers, **(extra_headers or {})})


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status, headers, media_type="application/json")


# -- request schema -------------------------------------------------------------------------


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_TextPart] | None = None
    name: str | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI chat-completions fields the gateway uses; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(None, ge=1)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)


def _validation_error(exc: ValidationError) -> APIError:
    err = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return APIError(400, f"request body is not valid JSON: {err.get('msg')}", code="invalid_json")
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
    if err.get("type") == "model_type" and not loc:
        return APIError(400, "request body must be a JSON object", code="invalid_json")
    # union errors carry the member type in loc ("messages.0.content.str"); keep the field path
    path = [str(p) for p in err.get("loc", ())]
    field_path = ".".join(p for p in path if p not in ("str", "list[_TextPart]", "list[str]", "body"))
    if err.get("type") == "missing":
        msg = f"missing required field '{field_path}'"
    else:
        msg = f"'{field_path}': {err.get('msg')}"
    return APIError(422, msg, param=field_path or None, code="invalid_value")


def _plain_messages(messages: list[_Message]) -> list[dict]:
    """Messages as backends take them: text content only (image parts etc. are dropped)."""
    out = []
    for m in messages:
        content = m.content
        if isinstance(content, list):
            content = "\n".join(p.text for p in content if p.type == "text" and p.text)
        d: dict[str, Any] = {"role": m.role, "content": content or ""}
        if m.name:
            d["name"] = m.name
        out.append(d)
    return out


# -- pyramid adapter ------------------------------------------------------------------------


@dataclass
class ModelSlot:
    """One pyramid model as the gateway uses it."""

    name: str
    backend: Backend
    input_per_1m: float
    output_per_1m: float
    context_window: int
    timeout_s: float
    max_concurrency: int
    semaphore: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(max(1, int(self.max_concurrency)))

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_1m + tokens_out * self.output_per_1m) / 1e6


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def _price_of(model_cfg: Any) -> tuple[float, float]:
    price = _get(model_cfg, "price")
    src = price if price is not None else model_cfg
    return float(_get(src, "input_per_1m", "input", default=0.0)), float(_get(src, "output_per_1m", "output", default=0.0))


# -- metrics --------------------------------------------------------------------------------


class _Metrics:
    """Per-app registry, so several gateways (tests, benches) can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tierwise_requests", "Chat requests by answering model and HTTP status",
                                ["model", "status"], registry=r)
        self.latency = Histogram("tierwise_request_latency_seconds", "End-to-end chat request latency",
                                 ["model"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.route_latency = Histogram("tierwise_routing_decision_seconds", "Time the router took to decide",
                                       registry=r, buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, .01, .05))
        self.fallbacks = Counter("tierwise_fallbacks", "Attempts that failed and fell back to another model",
                                 ["model", "reason"], registry=r)
        self.tokens = Counter("tierwise_tokens", "Tokens by model and direction", ["model", "direction"], registry=r)
        self.cost = Counter("tierwise_cost_usd", "Spend in USD by model (pyramid prices)", ["model"], registry=r)


# -- the gateway ----------------------------------------------------------------------------


@dataclass
class _Attempt:
    """State of one request while it runs; becomes the log row."""

    rec: RequestRecord
    t0: float
    messages: list[dict]
    chain: list[str]
    decision: Decision | None = None
    allowed: list[str] = field(default_factory=list)  # models whose context window fits the request
    # cascade requests only: tokens per model called, models that failed, the model streaming live,
    # and the per-model streams opened (closed explicitly when the client leaves)
    usage: dict[str, list[int]] | None = None
    failed: set[str] = field(default_factory=set)
    live: str | None = None
    streams: list[Any] = field(default_factory=list)


class Gateway:
    """Routing, fallback and logging for one pyramid; ``create_app`` wraps it in FastAPI."""

    def __init__(self, models: Sequence[ModelSlot], router: Any, log: DecisionLog | None, *,
                 api_keys: Sequence[str] = (), max_body_bytes: int = DEFAULT_MAX_BODY,
                 max_pending: int = DEFAULT_MAX_PENDING, default_knob: Any = None,
                 cascade: CascadeRouter | None = None, cascade_source: str | None = None,
                 cascade_default: bool = False):
        if not models:
            raise ValueError("the pyramid has no models")
        self.models = list(models)  # cheapest first
        self.by_name = {m.name: m for m in self.models}
        self.order = {m.name: i for i, m in enumerate(self.models)}
        self.router = router
        self.log = log
        self.api_keys = frozenset(k for k in api_keys if k)
        self.max_body_bytes = int(max_body_bytes)
        self.max_pending = int(max_pending)
        self.default_knob = default_knob
        self.cascade = cascade  # template: per request its models are wrapped in _CascadeBackend
        self.cascade_source = cascade_source
        self.cascade_default = bool(cascade_default and cascade is not None)
        self.pending = 0
        self.metrics = _Metrics()
        from .router import conversation_text  # the router module owns how a conversation is read

        self._conversation_text = conversation_text

    # -- helpers ----------------------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        if not self.api_keys:
            return
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if key not in self.api_keys:
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                           type="authentication_error", code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(413, f"request body is {declared} bytes; the limit is {self.max_body_bytes}",
                           code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise APIError(413, f"request body exceeds the limit of {self.max_body_bytes} bytes",
                               code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _chain(self, first: str, allowed: Sequence[str]) -> list[str]:
        """``first``, then the allowed models above it cheapest first, then those below it."""
        i = self.order[first]
        up = [m.name for m in self.models[i + 1:] if m.name in allowed]
        down = [m.name for m in reversed(self.models[:i]) if m.name in allowed]
        return [first, *up, *down]

    def _stream_end(self, att: _Attempt,
                    release: Callable[[], Awaitable[None]]) -> Callable[[int, str | None], Awaitable[None]]:
        """How a streamed request ends, run once by whichever comes first (the body generator or
        ``_GuardedStream``): ``release`` the model side, then count the request done and log it."""
        done = False

        async def end(status: int, error: str | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            await release()
            self.pending -= 1
            self._finish(att, status, error=error)

        return end

    def _finish(self, att: _Attempt, status: int, *, error: str | None = None) -> None:
        rec = att.rec
        rec.status = status
        rec.error = error or rec.error
        rec.latency_ms = (time.perf_counter() - att.t0) * 1000
        m = self.metrics
        label = rec.model or "none"
        m.requests.labels(label, str(status)).inc()
        m.latency.labels(label).observe(rec.latency_ms / 1000)
        if status == 200 and rec.model:
            # a cascade spent tokens on every model it called: count them where they were spent
            spent = ([(rec.model, rec.tokens_in, rec.tokens_out, rec.cost_usd)] if att.usage is None
                     else [(n, u[0], u[1], self.by_name[n].cost(u[0], u[1])) for n, u in att.usage.items()])
            for name, t_in, t_out, cost in spent:
                m.tokens.labels(name, "in").inc(t_in)
                m.tokens.labels(name, "out").inc(t_out)
                m.cost.labels(name).inc(cost)
        if self.log is not None:
            self.log.record(rec)

    def _headers(self, att: _Attempt) -> dict[str, str]:
        rec = att.rec
        h = {
            "x-request-id": rec.id,
            "x-tierwise-model": rec.model or "",
            "x-tierwise-router": rec.router,
            "x-tierwise-cost-usd": f"{rec.cost_usd:.10f}",
        }
        if att.decision is not None and rec.model in att.decision.scores:
            h["x-tierwise-score"] = f"{att.decision.scores[rec.model]:.4f}"
        if rec.fallbacks:
            h["x-tierwise-fallbacks"] = ",".join(f["model"] for f in rec.fallbacks)
        return h

    def _fail(self, att: _Attempt, name: str, exc: BaseException, reason: str) -> None:
        msg = str(exc) or type(exc).__name__
        att.rec.fallbacks.append({"model": name, "reason": reason, "error": msg[:300]})
        self.metrics.fallbacks.labels(name, reason).inc()

    @contextlib.asynccontextmanager
    async def _slot(self, slot: ModelSlot):
        """Hold one of the model's concurrency slots; waiting longer than its timeout is a failure."""
        try:
            await _within(slot.semaphore.acquire(), slot.timeout_s)
        except asyncio.TimeoutError:
            raise _QueueTimeout(f"{slot.name}: no free slot within {slot.timeout_s:g}s (overloaded)") from None
        try:
            yield
        finally:
            slot.semaphore.release()

    # -- the request ------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        t0 = time.perf_counter()
        rid = f"chatcmpl-{_ids.getrandbits(128):032x}"
        rec = RequestRecord(id=rid, ts=time.time(), prompt_hash="", status=0)
        att = _Attempt(rec=rec, t0=t0, messages=[], chain=[])
        try:
            self.check_auth(request)
        except APIError as exc:
            return exc.response({"x-request-id": rid})  # unauthenticated traffic is not logged
        if self.pending >= self.max_pending:
            err = APIError(503, f"gateway overloaded ({self.pending} requests in flight); retry later",
                           type="server_error", code="overloaded", headers={"retry-after": "1"})
            self._finish(att, err.status, error=err.message)
            return err.response({"x-request-id": rid})
        self.pending += 1
        streaming = False
        try:
            body = await self.read_body(request)
            try:
                req = ChatRequest.model_validate_json(body)
            except ValidationError as exc:
                rec.prompt_hash = prompt_hash(body.decode("utf-8", "replace"))
                raise _validation_error(exc) from None
            rec.requested_model = req.model
            rec.stream = bool(req.stream)
            if req.n not in (None, 1):
                raise APIError(400, "only n=1 is supported", param="n", code="unsupported_value")
            att.messages = _plain_messages(req.messages)
            text = self._conversation_text(att.messages)
            rec.prompt_hash = prompt_hash(text)
            rec.prompt = text
            max_tokens = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
            allowed = [m.name for m in self.models
                       if m.backend.count_tokens(att.messages) + max_tokens <= m.context_window]
            att.allowed = allowed
            cascade = self._wants_cascade(req.model)
            if cascade:
                self._plan_cascade(att, max_tokens)
            else:
                self._plan(att, req.model, allowed, text, max_tokens)
            kwargs = {"max_tokens": max_tokens, "temperature": req.temperature or 0.0,
                      "stop": [req.stop] if isinstance(req.stop, str) else req.stop}
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                run_stream = self._cascade_stream if cascade else self._stream
                response = await run_stream(att, kwargs, include_usage)
                streaming = True
                return response
            return await (self._cascade_complete if cascade else self._complete)(att, kwargs)
        except APIError as exc:
            self._finish(att, exc.status, error=exc.message)
            return exc.response(self._headers(att))
        except Exception as exc:  # a bug must still answer in OpenAI's shape and be logged
            err = APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error",
                           code="internal_error")
            self._finish(att, 500, error=err.message)
            return err.response(self._headers(att))
        finally:
            if not streaming:
                self.pending -= 1

    def _plan(self, att: _Attempt, requested: str, allowed: list[str], text: str, max_tokens: int) -> None:
        """Pick the first model (router or the named one) and the fallback chain after it."""
        rec = att.rec
        if requested == ROUTED or requested.startswith(ROUTED + ":"):
            knob: Any = self.default_knob
            if requested != ROUTED:
                spec = requested[len(ROUTED) + 1:]
                try:
                    knob = self.router.parse_knob(spec)
                except ValueError as exc:
                    raise APIError(400, f"bad knob in model '{requested}': {exc}", param="model",
                                   code="invalid_knob") from None
            if not allowed:
                raise self._too_long(max_tokens)
            t = time.perf_counter()
            try:
                decision = self.router.route(text, knob=knob, allowed=allowed)
            except Exception as exc:
                # a broken router must not take the gateway down: answer with the most capable model
                # that fits, and make it visible (log error, fallback metric, x-tierwise-router)
                rec.route_ms = (time.perf_counter() - t) * 1000
                rec.router = f"failed:{getattr(self.router, 'name', 'router')}"
                rec.error = f"router failed: {type(exc).__name__}: {exc}"[:300]
                self.metrics.fallbacks.labels("router", "router_error").inc()
                att.chain = self._chain(allowed[-1], allowed)
                return
            rec.route_ms = (time.perf_counter() - t) * 1000
            self.metrics.route_latency.observe(rec.route_ms / 1000)
            att.decision = decision
            rec.router = str(decision.router or getattr(self.router, "name", "router"))
            rec.rule, rec.knob = decision.rule, float(decision.knob)
            rec.scores = {k: float(v) for k, v in decision.scores.items()}
            rec.chosen = decision.model
            first = decision.model if decision.model in allowed else allowed[0]
        elif requested in self.by_name:
            rec.router = "direct"
            rec.chosen = requested
            if requested not in allowed:
                if not allowed:
                    raise self._too_long(max_tokens)
                # the named model cannot hold the request: the next one that can answers
                first = next((n for n in self._chain(requested, self.by_name) if n in allowed))
                rec.fallbacks.append({"model": requested, "reason": "context", "error": "context window too small"})
            else:
                first = requested
        else:
            names = ", ".join([ROUTED, f"{ROUTED}:<knob>", *([CASCADE] if self.cascade else []), *self.by_name])
            raise APIError(404, f"model '{requested}' does not exist; use one of: {names}", param="model",
                           code="model_not_found")
        att.chain = self._chain(first, allowed)

    def _too_long(self, max_tokens: int) -> APIError:
        biggest = max(m.context_window for m in self.models)
        return APIError(400, f"prompt plus max_tokens={max_tokens} does not fit any model's context window "
                             f"(largest: {biggest} tokens)", param="messages", code="context_length_exceeded")

    def _all_failed(self, att: _Attempt) -> APIError:
        fb = att.rec.fallbacks
        tried = "; ".join(f"{f['model']}: {f['error']}" for f in fb if f["reason"] != "context")
        if fb and all(f["reason"] in ("overloaded", "context") for f in fb):
            return APIError(503, f"all models are busy ({tried})", type="server_error", code="overloaded",
                            headers={"retry-after": "1"})
        return APIError(502, f"every model in the pyramid failed ({tried})", type="server_error",
                        code="backend_error")

    def _answered(self, att: _Attempt, name: str, tokens_in: int, tokens_out: int) -> None:
        rec = att.rec
        rec.model = name
        rec.tokens_in, rec.tokens_out = int(tokens_in), int(tokens_out)
        rec.cost_usd = self.by_name[name].cost(rec.tokens_in, rec.tokens_out)

    async def _complete(self, att: _Attempt, kwargs: dict) -> Response:
        result: ChatResult | None = None
        name = ""
        for name in att.chain:
            slot = self.by_name[name]
            try:
                async with self._slot(slot):
                    result = await _within(slot.backend.chat(att.messages, timeout=slot.timeout_s, **kwargs),
                                           slot.timeout_s)
                break
            except Exception as exc:
                self._fail(att, name, *_failure(exc, f"no answer within {slot.timeout_s:g}s"))
        if result is None:
            raise self._all_failed(att)
        self._answered(att, name, result.tokens_in, result.tokens_out)
        body = self._completion_body(att, result.text, result.finish_reason)
        self._finish(att, 200)
        return _json(body, 200, self._headers(att))

    @staticmethod
    def _completion_body(att: _Attempt, text: str, finish_reason: str | None) -> dict:
        """OpenAI's ``chat.completion`` for the answer recorded on ``att.rec`` (model, usage)."""
        rec = att.rec
        return {
            "id": rec.id,
            "object": "chat.completion",
            "created": int(rec.ts),
            "model": rec.model,
            "system_fingerprint": None,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason or "stop",
            }],
            "usage": {"prompt_tokens": rec.tokens_in, "completion_tokens": rec.tokens_out,
                      "total_tokens": rec.tokens_in + rec.tokens_out},
        }

    # -- the cascade ------------------------------------------------------------------------

    def _wants_cascade(self, requested: str) -> bool:
        """``tierwise:cascade`` always; plain ``tierwise`` when the cascade replaces the stand-in."""
        if requested == CASCADE:
            if self.cascade is None:
                raise APIError(400, f"model '{CASCADE}' needs calibrated cascade thresholds: run `tierwise cascade "
                                    "calibrate TABLE --target quality=0.95 --out cascade.json`, then set "
                                    "`cascade: cascade.json` in the pyramid YAML or start `tierwise serve "
                                    "--cascade cascade.json`", param="model", code="cascade_not_configured")
            return True
        return requested == ROUTED and self.cascade_default

    def _plan_cascade(self, att: _Attempt, max_tokens: int) -> None:
        """The cascade decides as it goes; here only what must hold before it starts."""
        rec = att.rec
        rec.router = "cascade"
        rec.rule = self.cascade.thresholds.confidence
        if not att.allowed:
            raise self._too_long(max_tokens)
        top = self.by_name[self.cascade.models[-1].name]
        if top.name not in att.allowed:  # the top answers whenever nothing below is confident
            raise APIError(400, f"prompt plus max_tokens={max_tokens} does not fit the cascade's top model "
                                f"{top.name} ({top.context_window} tokens); ask a model by name instead",
                           param="messages", code="context_length_exceeded")
        att.usage = {}

    def _cascade_for(self, att: _Attempt) -> CascadeRouter:
        """The configured cascade with this request's view of each model (cheap: no I/O)."""
        tpl = self.cascade
        models = [CascadeModel(m.name, _CascadeBackend(self, self.by_name[m.name], att), m.input_per_1m,
                               m.output_per_1m) for m in tpl.models]
        return CascadeRouter(models, tpl.thresholds, samples=tpl.samples, sample_temperature=tpl.sample_temperature)

    def _cascade_steps(self, att: _Attempt, chain: Sequence[tuple[str, float | None, bool]] | None) -> list[dict]:
        """Log form of the chain, with each model's own tokens and cost; ``None``: what is known so far."""
        if chain is None:  # the cascade failed or was cut off: rebuild its chain from the per-model records
            chain = [(n, None, n != att.live or n in att.failed) for n in self.order
                     if n in att.usage or n in att.failed or n == att.live]
        steps = []
        for name, conf, escalated in chain:
            t_in, t_out = att.usage.get(name, (0, 0))
            outcome = "error" if escalated and name in att.failed else "escalated" if escalated else "kept"
            steps.append({"model": name, "confidence": None if conf is None else round(float(conf), 6),
                          "outcome": outcome, "tokens_in": t_in, "tokens_out": t_out,
                          "cost_usd": self.by_name[name].cost(t_in, t_out)})
        return steps

    def _cascade_spent(self, att: _Attempt) -> None:
        """Totals over every model called so far (the money is spent even if the request fails)."""
        rec = att.rec
        rec.tokens_in = sum(u[0] for u in att.usage.values())
        rec.tokens_out = sum(u[1] for u in att.usage.values())
        rec.cost_usd = sum(self.by_name[n].cost(*u) for n, u in att.usage.items())

    def _cascade_failed(self, att: _Attempt, exc: BaseException) -> APIError:
        """The top model failed (lower ones were escalated past or not confident): 502, or 503 if busy."""
        self._cascade_spent(att)
        att.rec.cascade_chain = self._cascade_steps(att, None)
        fb = att.rec.fallbacks
        tried = "; ".join(f"{f['model']}: {f['error']}" for f in fb) or (str(exc) or type(exc).__name__)
        top = self.cascade.models[-1].name
        if fb and fb[-1]["model"] == top and fb[-1]["reason"] == "overloaded":
            return APIError(503, f"cascade: the top model {top} is busy ({tried})", type="server_error",
                            code="overloaded", headers={"retry-after": "1"})
        return APIError(502, f"cascade: the top model {top} failed and no cheaper answer was kept ({tried})",
                        type="server_error", code="backend_error")

    def _cascade_answered(self, att: _Attempt, model: str, chain: Sequence[tuple[str, float | None, bool]],
                          tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        rec = att.rec
        rec.model = rec.chosen = model
        rec.tokens_in, rec.tokens_out, rec.cost_usd = int(tokens_in), int(tokens_out), float(cost_usd)
        rec.cascade_chain = self._cascade_steps(att, chain)

    async def _cascade_complete(self, att: _Attempt, kwargs: dict) -> Response:
        try:
            res = await self._cascade_for(att).complete(att.messages, **kwargs)
        except BackendError as exc:  # only the top model's failure gets here; lower ones are escalated past
            raise self._cascade_failed(att, exc) from None
        self._cascade_answered(att, res.model, res.chain, res.tokens_in, res.tokens_out, res.cost_usd)
        body = self._completion_body(att, res.text, res.finish_reason)
        self._finish(att, 200)
        headers = self._headers(att)
        headers["x-tierwise-cascade-chain"] = chain_header(att.rec.cascade_chain)
        return _json(body, 200, headers)

    async def _cascade_stream(self, att: _Attempt, kwargs: dict, include_usage: bool) -> Response:
        """Wait until the answering model is known (a kept lower answer, or the top's first token), so
        failures before that are still a plain JSON error and every chunk names the right model."""
        agen = self._cascade_for(att).stream(att.messages, **kwargs)
        it = _aiter(agen)
        buffered: list[StreamDelta] = []

        async def close_all() -> None:
            for g in (agen, *reversed(att.streams)):
                with contextlib.suppress(BaseException):
                    await _aclose(g)

        try:
            while att.live is None and not (buffered and "cascade" in buffered[-1].extra):
                buffered.append(await it.__anext__())  # bounded: every model call has its timeout
        except BackendError as exc:
            await close_all()
            raise self._cascade_failed(att, exc) from None
        except BaseException:
            await close_all()
            raise
        rec = att.rec
        final = buffered[-1].extra.get("cascade") if buffered[-1].extra else None
        rec.model = rec.chosen = final["model"] if final else att.live
        headers = self._headers(att)
        if final is None:  # the top streams live: what the lower models cost, plus the top's prompt
            self._cascade_spent(att)
            slot = self.by_name[rec.model]
            prompt_cost = slot.cost(slot.backend.count_tokens(att.messages), 0)
            headers["x-tierwise-cost-usd"] = f"{rec.cost_usd + prompt_cost:.10f}"
            headers["x-tierwise-cost-estimated"] = "prompt-only"
        else:
            headers["x-tierwise-cost-usd"] = f"{float(final['cost_usd']):.10f}"

        async def release() -> None:
            await close_all()
            if att.rec.cascade_chain is None:  # failed or cut off: log what was spent on the way
                self._cascade_spent(att)
                att.rec.cascade_chain = self._cascade_steps(att, None)

        cleanup = self._stream_end(att, release)
        return _GuardedStream(self._cascade_sse(att, it, buffered, cleanup, include_usage), cleanup,
                              media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})

    async def _cascade_sse(self, att: _Attempt, it: Any, buffered: list[StreamDelta], cleanup: Any,
                           include_usage: bool) -> AsyncIterator[bytes]:
        """Same wire format as ``_sse``; the last chunk(s) carry ``tierwise`` = {model, chain, cost}."""
        rec = att.rec
        base = {"id": rec.id, "object": "chat.completion.chunk", "created": int(rec.ts), "model": rec.model,
                "system_fingerprint": None}

        def event(obj: dict) -> bytes:
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> bytes:
            obj = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                obj["usage"] = None
            return event({**obj, **extra})

        status, error = 200, None
        last: StreamDelta | None = None
        try:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            pending = iter(buffered)
            while True:
                d = next(pending, None)
                if d is None:
                    try:
                        d = await it.__anext__()  # each gap bounded by the model's timeout (_CascadeBackend)
                    except StopAsyncIteration:
                        break
                if d.text:
                    yield chunk({"content": d.text})
                if "cascade" in d.extra:
                    last = d
                    break
            if last is None:
                raise BackendError("cascade", "ended without an answer")
            info = last.extra["cascade"]
            self._cascade_answered(att, info["model"], info["chain"], last.tokens_in or 0, last.tokens_out or 0,
                                   info["cost_usd"])
            tw = {"model": rec.model, "router": "cascade", "cost_usd": rec.cost_usd,
                  "chain": chain_header(rec.cascade_chain), "steps": rec.cascade_chain}
            yield chunk({}, last.finish_reason or "stop", tierwise=tw)
            if include_usage:
                usage = {"prompt_tokens": rec.tokens_in, "completion_tokens": rec.tokens_out,
                         "total_tokens": rec.tokens_in + rec.tokens_out}
                yield event({**base, "choices": [], "usage": usage, "tierwise": tw})
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client closed the stream"
            raise
        except Exception as exc:  # after the first token there is no fallback: end with an error event
            msg = str(exc) or type(exc).__name__
            status, error = 502, msg
            yield event(APIError(502, msg, type="server_error", code="backend_error").body())
        finally:
            await cleanup(status, error)

    async def _open_stream(self, slot: ModelSlot, messages: list[dict], kwargs: dict):
        """Start a stream and wait for its first token (or its end) within the model's timeout.

        Returns (iterator, buffered deltas, slot release). Any failure here is still a fallback.
        """
        cm = self._slot(slot)
        await cm.__aenter__()
        agen = slot.backend.stream(messages, timeout=slot.timeout_s, **kwargs)
        buffered: list[StreamDelta] = []

        async def first() -> None:
            async for d in _aiter(agen):
                buffered.append(d)
                if d.text or d.finish_reason:
                    return

        try:
            await _within(first(), slot.timeout_s)
        except BaseException:
            with contextlib.suppress(Exception):
                await _aclose(agen)
            await cm.__aexit__(None, None, None)
            raise
        return agen, buffered, cm

    async def _stream(self, att: _Attempt, kwargs: dict, include_usage: bool) -> Response:
        opened = None
        name = ""
        for name in att.chain:
            slot = self.by_name[name]
            try:
                opened = await self._open_stream(slot, att.messages, kwargs)
                break
            except Exception as exc:
                self._fail(att, name, *_failure(exc, f"no first token within {slot.timeout_s:g}s"))
        if opened is None:
            raise self._all_failed(att)
        agen, buffered, cm = opened
        slot = self.by_name[name]
        rec = att.rec
        rec.model = name
        # tokens are known only at the end: the header carries the prompt's cost, the log the full cost
        prompt_tokens = slot.backend.count_tokens(att.messages)
        rec.cost_usd = slot.cost(prompt_tokens, 0)
        headers = self._headers(att)
        headers["x-tierwise-cost-estimated"] = "prompt-only"

        async def release() -> None:
            with contextlib.suppress(BaseException):
                await _aclose(agen)
            await cm.__aexit__(None, None, None)

        cleanup = self._stream_end(att, release)
        return _GuardedStream(self._sse(att, slot, agen, buffered, cleanup, include_usage, prompt_tokens),
                              cleanup, media_type="text/event-stream",
                              headers={**headers, "cache-control": "no-cache"})

    async def _sse(self, att: _Attempt, slot: ModelSlot, agen: Any, buffered: list[StreamDelta], cleanup: Any,
                   include_usage: bool, prompt_tokens: int) -> AsyncIterator[bytes]:
        rec = att.rec
        created = int(rec.ts)
        base = {"id": rec.id, "object": "chat.completion.chunk", "created": created, "model": slot.name,
                "system_fingerprint": None}

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            obj = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                obj["usage"] = None
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        tokens_in, tokens_out, pieces, finish = None, None, 0, None
        status, error = 200, None

        def take(d: StreamDelta) -> str:
            nonlocal tokens_in, tokens_out, pieces, finish
            if d.tokens_in is not None:
                tokens_in = d.tokens_in
            if d.tokens_out is not None:
                tokens_out = d.tokens_out
            if d.finish_reason:
                finish = d.finish_reason
            if d.text:
                pieces += 1
            return d.text

        try:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            for d in buffered:
                if take(d):
                    yield chunk({"content": d.text})
            if finish is None:
                it = _aiter(agen)
                while True:
                    try:
                        d = await _within(it.__anext__(), slot.timeout_s)
                    except StopAsyncIteration:
                        break
                    if take(d):
                        yield chunk({"content": d.text})
                    if d.finish_reason:
                        break
            yield chunk({}, finish or "stop")
            ti = int(tokens_in if tokens_in is not None else prompt_tokens)
            to = int(tokens_out if tokens_out is not None else pieces)
            self._answered(att, slot.name, ti, to)
            if include_usage:
                usage = {**base, "choices": [],
                         "usage": {"prompt_tokens": ti, "completion_tokens": to, "total_tokens": ti + to}}
                yield b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client closed the stream"
            raise
        except Exception as exc:  # after the first token there is no fallback: end with an error event
            if isinstance(exc, asyncio.TimeoutError):
                msg = f"{slot.name}: stream stalled for {slot.timeout_s:g}s"
            else:
                msg = str(exc) or type(exc).__name__
            status, error = 502, msg
            rec.tokens_in = int(tokens_in if tokens_in is not None else prompt_tokens)
            rec.tokens_out = int(tokens_out if tokens_out is not None else pieces)
            rec.cost_usd = slot.cost(rec.tokens_in, rec.tokens_out)
            err = APIError(502, msg, type="server_error", code="backend_error").body()
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        finally:
            await cleanup(status, error)

    # -- small endpoints --------------------------------------------------------------------

    def list_models(self) -> dict:
        created = int(time.time())
        data = [{"id": ROUTED, "object": "model", "created": created, "owned_by": "tierwise",
                 "router": "cascade" if self.cascade_default else getattr(self.router, "name", None)}]
        if self.cascade is not None:
            data.append({"id": CASCADE, "object": "model", "created": created, "owned_by": "tierwise",
                         "router": "cascade", "confidence": self.cascade.thresholds.confidence,
                         "thresholds": self.cascade_source})
        for m in self.models:
            data.append({"id": m.name, "object": "model", "created": created, "owned_by": "tierwise",
                         "context_window": m.context_window,
                         "price_per_1m": {"input": m.input_per_1m, "output": m.output_per_1m}})
        return {"object": "list", "data": data}

    async def feedback(self, request: Request) -> Response:
        self.check_auth(request)
        body = await self.read_body(request)
        try:
            fb = FeedbackRequest.model_validate_json(body)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        if self.log is None:
            raise APIError(503, "no decision log configured", type="server_error", code="no_log")
        found = await asyncio.wrap_future(self.log.add_feedback(fb.request_id, fb.score))
        if not found:
            raise APIError(404, f"unknown request_id '{fb.request_id}'", param="request_id", code="not_found")
        return _json({"object": "feedback", "request_id": fb.request_id, "score": fb.score})


class _CascadeBackend(Backend):
    """One pyramid model as the cascade sees it during one request.

    The cascade calls backends directly; this wraps each call in the gateway's rules -- the model's
    concurrency slot, its ``timeout_s`` for the slot wait and for the answer (streams: the first
    token and each gap), the context-window check -- and records failures and per-model tokens on
    the request. Every failure surfaces as a ``BackendError``, which is what the cascade escalates past.
    """

    def __init__(self, gw: Gateway, slot: ModelSlot, att: _Attempt):
        self.gw, self.slot, self.att = gw, slot, att
        self.name = slot.name
        self.context_window = slot.context_window

    def count_tokens(self, messages: list[dict]) -> int:
        return self.slot.backend.count_tokens(messages)

    def _failed(self, exc: BaseException, reason: str, *, record: bool = True) -> BackendError:
        self.att.failed.add(self.name)
        if record:
            self.gw._fail(self.att, self.name, exc, reason)
        if isinstance(exc, BackendError):
            return exc
        return BackendError(self.name, str(exc) or type(exc).__name__, timeout=reason == "timeout")

    def _fits(self) -> None:
        if self.name not in self.att.allowed:
            raise self._failed(BackendError(self.name, "context window too small for prompt + max_tokens"),
                               "context")

    def _used(self, tokens_in: int, tokens_out: int) -> None:
        u = self.att.usage.setdefault(self.name, [0, 0])
        u[0] += int(tokens_in)
        u[1] += int(tokens_out)

    async def chat(self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.0,
                   stop: list[str] | None = None, logprobs: bool = False, top_logprobs: int = 0,
                   timeout: float | None = None) -> ChatResult:
        self._fits()
        slot = self.slot
        try:
            async with self.gw._slot(slot):
                r = await _within(slot.backend.chat(messages, max_tokens=max_tokens, temperature=temperature,
                                                    stop=stop, logprobs=logprobs, top_logprobs=top_logprobs,
                                                    timeout=slot.timeout_s), slot.timeout_s)
        except Exception as exc:
            raise self._failed(*_failure(exc, f"no answer within {slot.timeout_s:g}s")) from None
        self._used(r.tokens_in, r.tokens_out)
        return r

    def stream(self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: list[str] | None = None, timeout: float | None = None) -> AsyncIterator[StreamDelta]:
        gen = self._stream(messages, max_tokens, temperature, stop)
        self.att.streams.append(gen)  # closed by the gateway even if the cascade is torn down mid-stream
        return gen

    async def _stream(self, messages: list[dict], max_tokens: int, temperature: float,
                      stop: list[str] | None) -> AsyncIterator[StreamDelta]:
        self._fits()
        slot = self.slot
        cm = self.gw._slot(slot)
        try:
            await cm.__aenter__()
        except _QueueTimeout as exc:
            raise self._failed(exc, "overloaded") from None
        agen = slot.backend.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                   timeout=slot.timeout_s)
        it = _aiter(agen)
        t_in = t_out = None
        started = finished = False
        pieces = 0
        try:
            while True:
                try:
                    d = await _within(it.__anext__(), slot.timeout_s)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    msg = (f"stream stalled for {slot.timeout_s:g}s" if started
                           else f"no first token within {slot.timeout_s:g}s")
                    raise self._failed(*_failure(exc, msg), record=not started) from None
                if not started:
                    started = True
                    self.att.live = slot.name
                if d.tokens_in is not None:
                    t_in = d.tokens_in
                if d.tokens_out is not None:
                    t_out = d.tokens_out
                pieces += bool(d.text)
                yield d
            finished = True
        finally:
            if started:  # complete: the same fallbacks as CascadeRouter.stream, so records add up to
                # its totals; cut off: the prompt and the pieces sent were paid for all the same
                self._used(t_in if t_in is not None else slot.backend.count_tokens(messages),
                           t_out if t_out is not None else (0 if finished else pieces))
            with contextlib.suppress(BaseException):
                await _aclose(agen)
            await cm.__aexit__(None, None, None)


def chain_header(steps: Sequence[dict] | None) -> str:
    """``m0:-0.92:escalated,m1:-0.21:kept``: model, confidence (``none``: no signal), outcome."""
    out = []
    for s in steps or ():
        conf = "none" if s.get("confidence") is None else f"{s['confidence']:.2f}"
        out.append(f"{s['model']}:{conf}:{s['outcome']}")
    return ",".join(out)


class _QueueTimeout(Exception):
    pass


def _failure(exc: Exception, timeout_msg: str) -> tuple[BaseException, str]:
    """A failed model call as (error to record, fallback reason); ``timeout_msg`` says which deadline passed.

    The one rule for the gateway's fallbacks and the cascade's escalations.
    """
    if isinstance(exc, _QueueTimeout):
        return exc, "overloaded"
    if isinstance(exc, asyncio.TimeoutError):
        return TimeoutError(timeout_msg), "timeout"
    if isinstance(exc, BackendError):
        return exc, "timeout" if exc.timeout else "error"
    return exc, "error"


async def _within(aw: Any, seconds: float) -> Any:
    """Await with a deadline in the *current* task (wait_for's extra task breaks stream iterators
    that hold cancel scopes, e.g. httpx's)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await aw
    return await asyncio.wait_for(aw, seconds)  # pragma: no cover - Python 3.10


class _GuardedStream(StreamingResponse):
    """A streaming response whose cleanup runs even if the client leaves before the body starts
    (then Starlette never iterates the generator, so the generator's own ``finally`` never runs)."""

    def __init__(self, content: Any, cleanup: Any, **kwargs: Any):
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup(499, "client closed the stream")


def _aiter(agen: Any) -> Any:
    return agen.__aiter__() if hasattr(agen, "__aiter__") else agen


async def _aclose(agen: Any) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        await close()


# -- app factory ----------------------------------------------------------------------------


def build_slots(pyramid: Any, backends: dict[str, Backend] | None = None) -> list[ModelSlot]:
    """The pyramid's models with their backends (built from config unless given, e.g. in tests)."""
    slots = []
    for m in pyramid.models:
        name = _get(m, "name")
        if backends is not None and name in backends:
            be = backends[name]
        else:
            from .backends import build_backend

            be = build_backend(m)
        pin, pout = _price_of(m)
        slots.append(ModelSlot(
            name=name, backend=be, input_per_1m=pin, output_per_1m=pout,
            context_window=int(_get(m, "context_window", default=None) or getattr(be, "context_window", 4096)),
            timeout_s=float(_get(m, "timeout_s", default=None) or 60.0),
            max_concurrency=int(_get(m, "max_concurrency", default=None) or 4),
        ))
    return slots


def load_router(pyramid: Any, path: str | None = None) -> Any:
    """The trained router at ``path`` (or the pyramid's), else the documented stand-in."""
    from .router import Router

    names = [_get(m, "name") for m in pyramid.models]
    path = path or _get(pyramid, "router")
    if path:
        router = Router.load(path)
        try:
            router.check_models(names)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return router
    costs = [sum(_price_of(m)) for m in pyramid.models]
    return Router.stand_in(names, costs)


def load_cascade(pyramid: Any, path: Any = None) -> tuple[Thresholds, str] | None:
    """Cascade thresholds from ``path`` (a file or :class:`Thresholds`) or the pyramid's ``cascade:``.

    Checked against the pyramid here, at startup, so a file calibrated for other models stops the
    gateway with the file named instead of failing on the first request.
    """
    path = path if path is not None else _get(pyramid, "cascade")
    if path is None or path == "":
        return None
    if isinstance(path, Thresholds):
        th, source = path, str(path.meta.get("source") or "<thresholds>")
    else:
        th, source = Thresholds.load(path), str(path)
    names = [_get(m, "name") for m in pyramid.models]
    if th.models != names:
        raise CascadeError(f"{source}: cascade thresholds are for models {th.models}, the pyramid has {names}; "
                           "calibrate on a table collected from this pyramid (`tierwise cascade calibrate`)")
    if th.confidence == "self_consistency" and int(th.meta.get("samples") or 0) < 1:
        raise CascadeError(f"{source}: confidence self_consistency needs meta.samples >= 1 (answers sampled per model)")
    return th, source


def _trained(router: Any) -> bool:
    """False for the untrained stand-in (``Router.stand_in``), which the cascade should replace."""
    return not str(getattr(router, "name", "")).startswith("stand-in")


def default_knob(pyramid: Any, router: Any) -> Any:
    """The knob for ``model="tierwise"``: the pyramid's if the user set one, else the router's own.

    A trained router carries a calibrated default and the stand-in its own rule, so the config's
    built-in default knob must not override them; an explicit ``knob:`` in the YAML does.
    """
    explicit = "knob" in getattr(pyramid, "model_fields_set", ())
    if not explicit:
        return None
    if isinstance(pyramid.knob, str):  # a target: resolved once, now, on the router's calibration curve
        try:
            return router.parse_knob(pyramid.knob)
        except ValueError as exc:
            raise ValueError(f"knob {pyramid.knob!r}: {exc}") from None
    rule = _get(pyramid, "rule")
    if rule is not None and getattr(router, "rule", rule) != rule:
        raise ValueError(f"pyramid rule {rule!r} with knob {pyramid.knob!r}, but router {router.name!r} "
                         f"uses rule {router.rule!r}; set a knob for {router.rule!r} or retrain")
    return pyramid.knob


def create_app(pyramid: Any, *, router: Any = None, backends: dict[str, Backend] | None = None,
               log: DecisionLog | None = None, store_prompts: bool = False,
               max_pending: int = DEFAULT_MAX_PENDING, cascade: Any = None,
               cascade_default: bool | None = None) -> FastAPI:
    """The gateway app for a loaded pyramid.

    ``router``/``backends``/``log``/``cascade`` (thresholds file or :class:`Thresholds`) default to
    what the pyramid config says; pass them to share or replace parts (tests inject a failing backend
    this way). ``cascade_default``: whether plain ``tierwise`` runs the cascade; default: when a
    cascade is configured and the router is the untrained stand-in. The app closes the log and
    backends on shutdown, so queued log rows are written before the process exits.
    """
    from .decision_log import open_log

    loaded = load_cascade(pyramid, cascade)  # before any backend starts: a bad file fails fast
    slots = build_slots(pyramid, backends)
    router = router if router is not None else load_router(pyramid)
    if log is None:
        target = pyramid.log_target() if hasattr(pyramid, "log_target") else _get(pyramid, "log")
        log = open_log(target, store_prompts=store_prompts)
    keys = pyramid.client_keys() if hasattr(pyramid, "client_keys") else _get(pyramid, "api_keys")
    cascade_router, source = None, None
    if loaded is not None:
        th, source = loaded
        models = [CascadeModel(s.name, s.backend, s.input_per_1m, s.output_per_1m) for s in slots]
        cascade_router = CascadeRouter(models, th, samples=int(th.meta.get("samples") or 0))
    if cascade_default is None:
        cascade_default = cascade_router is not None and not _trained(router)
    gw = Gateway(slots, router, log, api_keys=keys or (),
                 max_body_bytes=int(_get(pyramid, "max_body_bytes", default=None) or DEFAULT_MAX_BODY),
                 max_pending=max_pending, default_knob=default_knob(pyramid, router),
                 cascade=cascade_router, cascade_source=source, cascade_default=cascade_default)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for s in slots:
            with contextlib.suppress(Exception):
                await s.backend.aclose()
        await asyncio.to_thread(log.close)

    app = FastAPI(title="tierwise gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gw

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        msg = f"{request.method} {request.url.path}: {exc.detail}"
        return APIError(exc.status_code, msg, code=kind).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return APIError(422, str(exc.errors()[0].get("msg")), code="invalid_value").response()

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> Response:
        return APIError(500, f"internal error: {type(exc).__name__}", type="server_error",
                        code="internal_error").response()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await gw.chat(request)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        gw.check_auth(request)
        return _json(gw.list_models())

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        return await gw.feedback(request)

    @app.get("/health")
    async def health() -> Response:
        problem = log.writer_error
        return _json({"status": "degraded" if problem else "ok", "models": [s.name for s in slots],
                      "router": getattr(router, "name", None), "cascade": gw.cascade_source,
                      "routed_model_uses": "cascade" if gw.cascade_default else "router",
                      "in_flight": gw.pending, "log": problem or "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
