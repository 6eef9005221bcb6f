"""The OpenAI-compatible gateway: route each chat request to the cheapest model likely to answer well.

Drop-in for any OpenAI client: ``model="tierwise"`` routes with the pyramid's default knob,
``model="tierwise:<knob>"`` with another knob, and a pyramid model's own name bypasses routing.
The answer says which model answered (``model`` field, ``x-tierwise-*`` headers) and every request
lands in the decision log.

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
from typing import Any, AsyncIterator, Literal, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from .backends.base import Backend, BackendError, ChatResult, StreamDelta
from .decision import Decision
from .decision_log import DecisionLog, RequestRecord, prompt_hash

ROUTED = "tierwise"
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


class Gateway:
    """Routing, fallback and logging for one pyramid; ``create_app`` wraps it in FastAPI."""

    def __init__(self, models: Sequence[ModelSlot], router: Any, log: DecisionLog | None, *,
                 api_keys: Sequence[str] = (), max_body_bytes: int = DEFAULT_MAX_BODY,
                 max_pending: int = DEFAULT_MAX_PENDING, default_knob: Any = None):
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
            m.tokens.labels(rec.model, "in").inc(rec.tokens_in)
            m.tokens.labels(rec.model, "out").inc(rec.tokens_out)
            m.cost.labels(rec.model).inc(rec.cost_usd)
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
            self._plan(att, req.model, allowed, text, max_tokens)
            kwargs = {"max_tokens": max_tokens, "temperature": req.temperature or 0.0,
                      "stop": [req.stop] if isinstance(req.stop, str) else req.stop}
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                response = await self._stream(att, kwargs, include_usage)
                streaming = True
                return response
            return await self._complete(att, kwargs)
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
            names = ", ".join([ROUTED, f"{ROUTED}:<knob>", *self.by_name])
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
            except _QueueTimeout as exc:
                self._fail(att, name, exc, "overloaded")
            except asyncio.TimeoutError:
                self._fail(att, name, TimeoutError(f"no answer within {slot.timeout_s:g}s"), "timeout")
            except BackendError as exc:
                self._fail(att, name, exc, "timeout" if exc.timeout else "error")
            except Exception as exc:
                self._fail(att, name, exc, "error")
        if result is None:
            raise self._all_failed(att)
        self._answered(att, name, result.tokens_in, result.tokens_out)
        body = {
            "id": att.rec.id,
            "object": "chat.completion",
            "created": int(att.rec.ts),
            "model": name,
            "system_fingerprint": None,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": None,
                "finish_reason": result.finish_reason or "stop",
            }],
            "usage": {"prompt_tokens": att.rec.tokens_in, "completion_tokens": att.rec.tokens_out,
                      "total_tokens": att.rec.tokens_in + att.rec.tokens_out},
        }
        self._finish(att, 200)
        return _json(body, 200, self._headers(att))

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
            except _QueueTimeout as exc:
                self._fail(att, name, exc, "overloaded")
            except asyncio.TimeoutError:
                self._fail(att, name, TimeoutError(f"no first token within {slot.timeout_s:g}s"), "timeout")
            except BackendError as exc:
                self._fail(att, name, exc, "timeout" if exc.timeout else "error")
            except Exception as exc:
                self._fail(att, name, exc, "error")
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
        done = False

        async def cleanup(status: int, error: str | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            with contextlib.suppress(BaseException):
                await _aclose(agen)
            await cm.__aexit__(None, None, None)
            self.pending -= 1
            self._finish(att, status, error=error)

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
                 "router": getattr(self.router, "name", None)}]
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


class _QueueTimeout(Exception):
    pass


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
        router.check_models(names)
        return router
    costs = [sum(_price_of(m)) for m in pyramid.models]
    return Router.stand_in(names, costs)


def default_knob(pyramid: Any, router: Any) -> Any:
    """The knob for ``model="tierwise"``: the pyramid's if the user set one, else the router's own.

    A trained router carries a calibrated default and the stand-in its own rule, so the config's
    built-in default knob must not override them; an explicit ``knob:`` in the YAML does.
    """
    explicit = "knob" in getattr(pyramid, "model_fields_set", ())
    if not explicit:
        return None
    rule = _get(pyramid, "rule")
    if rule is not None and getattr(router, "rule", rule) != rule:
        raise ValueError(f"pyramid rule {rule!r} with knob {pyramid.knob!r}, but router {router.name!r} "
                         f"uses rule {router.rule!r}; set a knob for {router.rule!r} or retrain")
    return pyramid.knob


def create_app(pyramid: Any, *, router: Any = None, backends: dict[str, Backend] | None = None,
               log: DecisionLog | None = None, store_prompts: bool = False,
               max_pending: int = DEFAULT_MAX_PENDING) -> FastAPI:
    """The gateway app for a loaded pyramid.

    ``router``/``backends``/``log`` default to what the pyramid config says; pass them to share or
    replace parts (tests inject a failing backend this way). The app closes the log and backends on
    shutdown, so queued log rows are written before the process exits.
    """
    from .decision_log import open_log

    slots = build_slots(pyramid, backends)
    router = router if router is not None else load_router(pyramid)
    if log is None:
        target = pyramid.log_target() if hasattr(pyramid, "log_target") else _get(pyramid, "log")
        log = open_log(target, store_prompts=store_prompts)
    keys = pyramid.client_keys() if hasattr(pyramid, "client_keys") else _get(pyramid, "api_keys")
    gw = Gateway(slots, router, log, api_keys=keys or (),
                 max_body_bytes=int(_get(pyramid, "max_body_bytes", default=None) or DEFAULT_MAX_BODY),
                 max_pending=max_pending, default_knob=default_knob(pyramid, router))

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
                      "router": getattr(router, "name", None), "in_flight": gw.pending, "log": problem or "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
