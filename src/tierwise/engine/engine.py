"""The engine: route + call + fall back + record, for one pyramid, with no HTTP in it.

Usable straight from Python (like RouteLLM's ``Controller``)::

    engine = Engine.from_pyramid(Pyramid.load("pyramid.yaml"))
    answer = await engine.chat({"model": "tierwise", "messages": [...]})      # ChatAnswer
    stream = await engine.chat_stream({"model": "tierwise", "messages": [...], "stream": True})
    async for chunk in stream: ...                                             # chunk dicts

One request: parse (``request``), candidates (``candidates``: capabilities, context), plan
(``plan``: routed / cascade / direct), dispatch (``dispatch`` or ``cascade``), then the record goes
to every listener (the decision log, metrics). The client's body is forwarded unchanged but for
``model``; the answer comes back unchanged but for ``model`` (the pyramid model that answered).
Errors are :mod:`tierwise.errors` classes carrying the finished record as ``.record``.

``embed`` / ``complete_text`` / ``complete_text_stream`` serve ``/v1/embeddings`` and legacy
``/v1/completions``: forwarded to one named (or default) model, not routed (``passthrough``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..config import DEFAULT_MAX_PENDING
from ..decision import Decision
from ..errors import AllModelsFailed, Overloaded, RequestError, TierwiseError
from ..quota import Quota
from . import budget
from . import candidates as _candidates
from . import dispatch
from . import plan as _plan
from .batching import RouteBatcher
from .body import load_json
from .cascade import Cascade
from .record import CascadeStep, RequestRecord, new_request_id, prompt_hash
from .request import ChatRequest, too_many
from .slot import Slot
from .stream import ChatStream, completion_chunks

Listener = Callable[[RequestRecord], None]


@dataclass
class ChatAnswer:
    """A finished non-streamed request: the ``chat.completion`` body and its record."""

    body: dict[str, Any]
    record: RequestRecord
    decision: Decision | None = None


@dataclass
class _Prepared:
    req: ChatRequest
    rec: RequestRecord
    plan: _plan.Plan
    body: dict[str, Any]  # what the backends get
    cascade_steps: list[tuple[Slot, float]] | None = None


class Engine:
    """Routing, dispatch and records for one pyramid (``slots`` cheapest first)."""

    def __init__(self, slots: Sequence[Slot], router: Any, *, cascade: Cascade | None = None,
                 cascade_default: bool = False, default_knob: Any = None,
                 max_pending: int = DEFAULT_MAX_PENDING, max_pending_per_key: int | None = None,
                 store_prompts: bool = False,
                 listeners: Sequence[Listener] = (), default_models: dict[str, str] | None = None,
                 quota: Quota | None = None, router_process: bool = False):
        if not slots:
            raise ValueError("the pyramid has no models")
        self.slots = list(slots)
        self.by_name = {s.name: s for s in self.slots}
        self.order = [s.name for s in self.slots]
        # decisions in a child process (engine/router_process.py); only for a router with route_many
        self._router_process = bool(router_process)
        self.router = router
        self.cascade = cascade
        self.cascade_default = bool(cascade_default and cascade is not None)
        self.default_knob = default_knob
        self.max_pending = int(max_pending)
        # one client key may hold at most this many requests in flight (None: no per-key cap)
        self.max_pending_per_key = max_pending_per_key
        self.pending_by_key: dict[str, int] = {}
        self.store_prompts = store_prompts
        self.listeners: list[Listener] = list(listeners)
        self.pending = 0
        self.quota = quota  # per-key budgets and rate limits (None: no key has any)
        # the model /v1/embeddings and /v1/completions use for model "tierwise" (engine/passthrough.py)
        self.default_models: dict[str, str] = dict(default_models or {})

    @property
    def router(self) -> Any:
        """The router that decides routed requests (setting it starts a new decision queue)."""
        return self._router

    @router.setter
    def router(self, router: Any) -> None:
        old = getattr(self, "batcher", None)
        if old is not None and old.remote is not None:
            old.remote.close()
        remote = None
        if self._router_process and getattr(router, "route_many", None) is not None:
            from .router_process import RouterProcess

            try:
                remote = RouterProcess(router)
            except Exception as exc:  # noqa: BLE001 - the loop can always decide: serve, and say why
                print(f"tierwise: no router process ({type(exc).__name__}: {exc}); deciding in the event loop",
                      file=sys.stderr, flush=True)
        self._router = router
        self.batcher = RouteBatcher(router, remote=remote)  # requests that arrive together are decided together

    @classmethod
    def from_pyramid(cls, pyramid: Any, **kwargs: Any) -> "Engine":
        """An engine for a loaded :class:`tierwise.config.Pyramid` (see ``engine.build.build_engine``)."""
        from .build import build_engine

        return build_engine(cls, pyramid, **kwargs)

    # -- one request -------------------------------------------------------------------------

    async def chat(self, body: dict[str, Any] | bytes, *, request_id: str | None = None,
                   surface: str = "chat", key_hash: str | None = None) -> ChatAnswer:
        """Answer a non-streamed request (``stream`` in the body is ignored).

        ``surface`` names the API the client called (``chat``, ``responses``, ``messages`` ...) for
        the record; other surfaces translate their request to a chat body before calling this.
        ``key_hash`` says which client key made it (feedback and stored responses check it).
        """
        rec = self._admit(request_id, surface, key_hash)
        try:
            p = await self._prepare(body, rec)
            if p.plan.kind == "cascade":
                slot, answer = await self._cascade_complete(p)
            else:
                slot, answer = await dispatch.complete(p.plan.chain, self.by_name, p.body, rec)
                self._answered(rec, slot, answer.tokens_in, answer.tokens_out, answer.usage_estimated)
            rec.upstream_id = answer.body.get("id") if isinstance(answer.body.get("id"), str) else None
            answer.body["model"] = slot.name
            self._finish(rec, 200)
            return ChatAnswer(answer.body, rec, p.plan.decision)
        except BaseException as exc:
            raise self._failed(rec, exc)
        finally:
            self.release(rec)

    async def chat_stream(self, body: dict[str, Any] | bytes, *, request_id: str | None = None,
                          surface: str = "chat", key_hash: str | None = None) -> ChatStream:
        """Start a streamed request; returns once the answering model has sent its first chunk.

        Failures before that fall back or raise; after it, the stream ends with an error chunk.
        The caller must iterate the stream or ``aclose()`` it (the record is finished then).
        """
        rec = self._admit(request_id, surface, key_hash)
        rec.stream = True
        handed_over = False
        try:
            p = await self._prepare(body, rec)
            if p.plan.kind == "cascade":
                s = await self._cascade_stream(p)
            else:
                opened = await dispatch.stream(p.plan.chain, self.by_name, p.body, rec)
                s = ChatStream(self, rec, opened.slot, opened, decision=p.plan.decision,
                               include_usage=p.req.include_usage)
            rec.model = s.slot.name
            await s.estimate_prompt_cost(p.req.messages, p.req.prompt_tools)
            handed_over = True
            return s
        except BaseException as exc:
            raise self._failed(rec, exc)
        finally:
            if not handed_over:
                self.release(rec)

    async def handle(self, body: dict[str, Any] | bytes, **kw: Any) -> ChatAnswer | ChatStream:
        """``chat`` or ``chat_stream``, as the body's ``stream`` field says (the body is parsed once)."""
        if not isinstance(body, dict):
            try:
                too_many(body)
                body = load_json(body)
            except (ValueError, RequestError):
                return await self.chat(body, **kw)  # raises the error, with its record
        if isinstance(body, dict) and body.get("stream") is True:
            return await self.chat_stream(body, **kw)
        return await self.chat(body, **kw)

    # -- endpoints forwarded to one model, not routed (engine/passthrough.py) -----------------

    async def embed(self, body: dict[str, Any] | bytes, **kw: Any) -> ChatAnswer:
        """``POST /v1/embeddings``: the named (or default) embedding model's answer; never falls back.
        ``kw``: ``request_id``, ``key_hash`` as for :meth:`chat`."""
        return await self._forwarded("embeddings", body, False, **kw)

    async def complete_text(self, body: dict[str, Any] | bytes, **kw: Any) -> ChatAnswer:
        """Legacy ``POST /v1/completions``, not streamed (``stream`` in the body is ignored)."""
        return await self._forwarded("completions", body, False, **kw)

    async def complete_text_stream(self, body: dict[str, Any] | bytes, **kw: Any) -> ChatStream:
        """Legacy completions streamed: ``text_completion`` chunks (see :meth:`chat_stream`)."""
        return await self._forwarded("completions", body, True, **kw)

    async def handle_text(self, body: dict[str, Any] | bytes, **kw: Any) -> ChatAnswer | ChatStream:
        """``complete_text`` or ``complete_text_stream``, as the body's ``stream`` field says."""
        return await self._forwarded("completions", body, None, **kw)

    async def _forwarded(self, endpoint: str, body: Any, stream: bool | None, **kw: Any) -> Any:
        from .passthrough import run

        return await run(self, endpoint, body, stream=stream, **kw)

    # -- steps ---------------------------------------------------------------------------------

    def _admit(self, request_id: str | None, surface: str = "chat", key_hash: str | None = None) -> RequestRecord:
        rec = RequestRecord(id=request_id or new_request_id(), ts=time.time(), surface=surface, key_hash=key_hash)
        rec._t0 = time.perf_counter()  # type: ignore[attr-defined]
        err = None
        if self.pending >= self.max_pending:
            err = Overloaded(f"gateway overloaded ({self.pending} requests in flight); retry later")
        elif key_hash is not None and self.max_pending_per_key is not None and \
                self.pending_by_key.get(key_hash, 0) >= self.max_pending_per_key:
            err = Overloaded(f"this API key has {self.max_pending_per_key} requests in flight, its limit; "
                             "retry when one finishes", status=429, type="rate_limit_error",
                             code="too_many_in_flight")
        if err is not None:
            self._finish(rec, err.status, err.message)
            err.record = rec  # type: ignore[attr-defined]
            raise err
        self.pending += 1
        if key_hash is not None:
            self.pending_by_key[key_hash] = self.pending_by_key.get(key_hash, 0) + 1
        return rec

    def release(self, rec: RequestRecord) -> None:
        """A request admitted by ``_admit`` is over: free its place (the global and its key's)."""
        self.pending -= 1
        k = rec.key_hash
        if k is not None and k in self.pending_by_key:
            left = self.pending_by_key[k] - 1
            if left > 0:
                self.pending_by_key[k] = left
            else:
                del self.pending_by_key[k]

    async def _prepare(self, body: dict[str, Any] | bytes, rec: RequestRecord) -> _Prepared:
        req = ChatRequest.parse(body)
        rec.requested_model = req.model
        rec.needs = sorted(req.needs)
        text = req.text()
        rec.prompt_hash = prompt_hash(text)
        if self.store_prompts:
            rec.prompt = text
        kind, spec = _plan.kind_of(req.model, self.order, cascade=self.cascade is not None,
                                   cascade_default=self.cascade_default)
        cands = await _candidates.select(req, self.slots)
        rec.candidates, rec.excluded = list(cands.allowed), dict(cands.excluded)
        if not cands.allowed:
            raise _candidates.nothing_fits(req, cands, self.slots)
        steps = None
        if kind == "direct":
            rec.router, rec.chosen = "direct", req.model
            plan, passed = _plan.direct(req.model, cands, self.order)
            if passed:
                rec.add_fallback(req.model, "context", passed)
        elif kind == "cascade":
            plan = _plan.Plan("cascade")
            rec.router, rec.rule = "cascade", self.cascade.thresholds.confidence
            steps = self.cascade.steps(self.by_name, cands.allowed, cands.excluded)
        else:
            knob = _plan.parse_knob(self.router, spec, self.default_knob, req.model)
            if self.quota is not None:  # a key near its budget routes cheaper
                knob = await budget.routed_knob(self.quota, rec, getattr(self.router, "rule", "cost_weight"),
                                                self.router.default_knob if knob is None else knob)
            plan = _plan.routed(await self.batcher.decide(text, knob, cands.allowed), cands, self.order, knob)
            self._record_plan(rec, plan)
        if self.quota is not None:
            called = [s for s, _ in steps] if steps is not None else [self.by_name[n] for n in plan.chain]
            await budget.reserve(self.quota, rec, req, called, every=steps is not None)
        return _Prepared(req, rec, plan, req.forward(), steps)

    def check_model(self, model: str) -> tuple[str, str | None]:
        """A ``model`` field checked as a request would check it, without serving anything: (plan kind, knob
        spec). An unknown name is a 404 listing the valid ones; a bad knob (``tierwise:abc``) a 400."""
        kind, spec = _plan.kind_of(model, self.order, cascade=self.cascade is not None,
                                   cascade_default=self.cascade_default)
        if kind == "routed":
            _plan.parse_knob(self.router, spec, self.default_knob, model)
        return kind, spec

    def _record_plan(self, rec: RequestRecord, plan: _plan.Plan) -> None:
        rec.route_ms = plan.route_ms
        if plan.router_error is not None:
            rec.router = f"failed:{getattr(self.router, 'name', 'router')}"
            rec.error = plan.router_error
            return
        d = plan.decision
        rec.router = str(d.router or getattr(self.router, "name", "router"))
        rec.rule, rec.knob = d.rule, float(d.knob)
        rec.scores = {k: float(v) for k, v in d.scores.items()}
        rec.chosen = d.model
        rec.guard = getattr(d, "guard", None)

    def _answered(self, rec: RequestRecord, slot: Slot, tokens_in: int, tokens_out: int, estimated: bool) -> None:
        rec.model = slot.name
        rec.tokens_in, rec.tokens_out = int(tokens_in), int(tokens_out)
        rec.cost_usd = slot.cost(rec.tokens_in, rec.tokens_out)
        rec.usage_estimated = bool(estimated)

    def _finish(self, rec: RequestRecord, status: int, error: str | None = None) -> None:
        budget.settle(self.quota, rec)
        rec.status = status
        rec.error = error or rec.error
        t0 = getattr(rec, "_t0", None)
        if t0 is not None:
            rec.latency_ms = (time.perf_counter() - t0) * 1000
        for listener in self.listeners:
            try:
                listener(rec)
            except Exception:  # a broken listener must not fail the request
                pass

    def _failed(self, rec: RequestRecord, exc: BaseException) -> BaseException:
        """Finish the record for an exception and return what to raise (always a TierwiseError
        unless the task was cancelled)."""
        if isinstance(exc, asyncio.CancelledError):
            self._finish(rec, 499, "client went away")
            return exc
        if not isinstance(exc, TierwiseError):
            exc = TierwiseError(f"internal error: {type(exc).__name__}: {exc}")
        if rec.status == 0:
            self._finish(rec, exc.status, exc.message)
        exc.record = rec  # type: ignore[attr-defined]
        return exc

    # -- the cascade ---------------------------------------------------------------------------

    @staticmethod
    def _cascade_spent(rec: RequestRecord, steps: list[CascadeStep]) -> None:
        """Chain and totals over every model called (spent even when the request then fails)."""
        rec.set_cascade(steps)
        rec.tokens_in = sum(s.tokens_in for s in steps)
        rec.tokens_out = sum(s.tokens_out for s in steps)
        rec.cost_usd = sum(s.cost_usd for s in steps)

    def _cascade_totals(self, rec: RequestRecord, steps: list[CascadeStep], kept: Slot) -> None:
        self._cascade_spent(rec, steps)
        rec.model = rec.chosen = kept.name

    async def _cascade_complete(self, p: _Prepared):
        steps: list[CascadeStep] = []
        try:
            got = await self.cascade.lower(p.cascade_steps, p.body, p.rec, steps)
            if got is None:
                top = p.cascade_steps[-1][0]
                got = (top, await self.cascade.top_complete(top, p.body, p.rec, steps))
        finally:
            if steps:
                self._cascade_spent(p.rec, steps)
        self._cascade_totals(p.rec, steps, got[0])
        return got

    async def _cascade_stream(self, p: _Prepared) -> ChatStream:
        steps: list[CascadeStep] = []
        try:
            got = await self.cascade.lower(p.cascade_steps, p.body, p.rec, steps)
            if got is not None:
                slot, answer = got
                self._cascade_totals(p.rec, steps, slot)
                chunks = completion_chunks(answer.body, include_usage=p.req.include_usage)
                return ChatStream(self, p.rec, slot, chunks, include_usage=p.req.include_usage,
                                  cascade_steps=steps, done=True)
            top = p.cascade_steps[-1][0]
            opened = await self.cascade.top_stream(top, p.body, p.rec, steps)
        finally:
            if steps:
                self._cascade_spent(p.rec, steps)
        return ChatStream(self, p.rec, top, opened, include_usage=p.req.include_usage, cascade_steps=steps)

    # -- the pyramid ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self.batcher.remote is not None:
            self.batcher.remote.close()
        for s in self.slots:
            try:
                await s.backend.aclose()
            except Exception:
                pass


__all__ = ["Engine", "ChatAnswer", "ChatStream", "AllModelsFailed"]
