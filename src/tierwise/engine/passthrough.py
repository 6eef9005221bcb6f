"""The endpoints that are forwarded, not routed: ``POST /v1/embeddings`` and legacy ``POST /v1/completions``.

Routing has nothing to save there: an embedding is only comparable with embeddings from the same
model, and a legacy prompt is written for one model. So a request goes to the pyramid model it
names or, for ``tierwise`` / ``tierwise:<anything>``, to the model the pyramid names as that
endpoint's default (``default_embeddings_model`` / ``default_completions_model``; none set is a 400
naming the key). The model must have the endpoint's capability (``embeddings`` / ``completions``),
else a 400 ``unsupported_capability`` naming it.

Everything else is chat's: the body is forwarded unchanged but ``model`` (``passthrough_request``
checks it), the answer comes back unchanged but ``model``; every call holds one of the model's
slots within its timeout and feeds its circuit breaker (``Slot``, ``dispatch``); a backend's own
4xx is returned as-is after one call; each request leaves one record (surface ``embeddings`` /
``completions``, tokens from the answer's ``usage``, cost at the model's prices, status, latency,
upstream id) for the engine's listeners: the decision log, metrics, ``tierwise stats``. A client
key's budget and rate limits apply as on chat (the most the request can cost is reserved first).

Fallback: a completion falls back like a named chat model (the completions-capable models above it,
cheapest first, then those below). An embedding never does: another model's vectors live in another
space, and mixing them into an index would corrupt it silently; a failure is a 502 (503 when the
model was only busy), and the client retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends.base import _usage_int
from ..errors import (
    AllModelsFailed,
    CapabilityError,
    ModelNotFound,
    Overloaded,
    RequestError,
)
from ..prices import estimate_tokens
from . import budget
from . import candidates as _candidates
from . import dispatch
from . import plan as _plan
from .passthrough_request import PassRequest, parse
from .record import RequestRecord, prompt_hash
from .stream import ChatStream

if TYPE_CHECKING:
    from .engine import ChatAnswer, Engine


@dataclass(frozen=True)
class Endpoint:
    name: str  # the path (/v1/<name>), the record's surface and the capability a model needs
    call: str  # the backend method answering it
    stream_call: str | None  # the backend method streaming it (None: no streaming)
    falls_back: bool

    @property
    def default_key(self) -> str:
        return f"default_{self.name}_model"


ENDPOINTS = {e.name: e for e in (Endpoint("embeddings", "embed", None, falls_back=False),
                                 Endpoint("completions", "complete_text", "stream_text", falls_back=True))}
CHECKS = (_candidates.has_capabilities, _candidates.is_healthy)  # no context check: the backend's 400 says it


def serving(engine: Engine, ep: Endpoint) -> list[str]:
    """The pyramid models that answer ``ep``, cheapest first."""
    return [s.name for s in engine.slots if ep.name in s.capabilities]


def _target(engine: Engine, ep: Endpoint, req: PassRequest, rec: RequestRecord) -> str:
    """The model the request goes to first: the one it names, or the endpoint's default."""
    able = serving(engine, ep)
    hint = (f"models serving /v1/{ep.name}: {', '.join(able)}" if able else
            f"no model of the pyramid serves /v1/{ep.name}: add one with `capabilities: [{ep.name}]`")
    name = req.model
    if name == _plan.ROUTED or name.startswith(_plan.ROUTED + ":"):
        name = engine.default_models.get(ep.name)
        if name is None:
            raise RequestError(f"model '{req.model}' on /v1/{ep.name} means the pyramid's default model for it, and "
                               f"none is set: set `{ep.default_key}: <model>` in the pyramid YAML, or name the "
                               f"model ({hint})", param="model", code="default_model_not_configured")
        rec.router = "default"
    elif name in engine.by_name:
        rec.router = "direct"
    else:
        raise ModelNotFound(f"model '{name}' does not exist ({hint}; or '{_plan.ROUTED}' for the "
                            f"`{ep.default_key}`)", param="model")
    if ep.name not in engine.by_name[name].capabilities:
        raise CapabilityError(f"model '{name}' does not serve /v1/{ep.name} (it lacks the `{ep.name}` "
                              f"capability); {hint}", param="model")
    rec.chosen = name
    return name


async def _chain(engine: Engine, ep: Endpoint, req: PassRequest, rec: RequestRecord) -> list[str]:
    name = _target(engine, ep, req, rec)
    if not ep.falls_back:
        rec.candidates = [name]
        return [name]
    cands = await _candidates.select(req, engine.slots, CHECKS)  # type: ignore[arg-type]
    rec.candidates, rec.excluded = list(cands.allowed), dict(cands.excluded)
    plan, passed = _plan.direct(name, cands, engine.order)
    if passed:  # its circuit is open: the next model up answers, as for a named chat model
        rec.add_fallback(name, "circuit", passed, "circuit open")
    return plan.chain


def _usage(out: dict[str, Any], req: PassRequest) -> tuple[int, int, bool]:
    """(tokens_in, tokens_out, estimated) from the answer's ``usage``, else estimated from the text."""
    usage = out.get("usage") if isinstance(out.get("usage"), dict) else {}
    t_in, t_out = _usage_int(usage, "prompt_tokens"), _usage_int(usage, "completion_tokens")
    generates = "completions" in req.needs
    estimated = t_in is None or (generates and t_out is None)
    if t_out is None:
        texts = [c.get("text") or "" for c in out.get("choices") or () if isinstance(c, dict)]
        t_out = estimate_tokens("".join(texts)) if generates else 0
    return (t_in if t_in is not None else estimate_tokens(req.text)), t_out, estimated


def _own_failure(ep: Endpoint, rec: RequestRecord, exc: BaseException) -> BaseException:
    """An endpoint without fallback says so when its one model failed, rather than 'every model'."""
    if ep.falls_back or not rec.fallbacks or not isinstance(exc, (AllModelsFailed, Overloaded)):
        return exc
    return type(exc)(f"model '{rec.chosen}' failed ({dispatch.tried(rec)}); /v1/{ep.name} is never retried on "
                     "another model (its vectors would not be comparable)")


async def run(engine: Engine, endpoint: str, body: Any, *, stream: bool | None, request_id: str | None = None,
              key_hash: str | None = None) -> ChatAnswer | ChatStream:
    """One request to ``/v1/<endpoint>``: the answer (``stream`` False), a started stream (True), or
    as the body's ``stream`` says (None; endpoints without streaming always answer)."""
    from .engine import ChatAnswer

    ep = ENDPOINTS[endpoint]
    rec = engine._admit(request_id, ep.name, key_hash)
    handed_over = False
    try:
        req = parse(ep.name, body)
        rec.stream = streaming = ep.stream_call is not None and (req.stream if stream is None else stream)
        rec.requested_model, rec.needs = req.model, sorted(req.needs)
        rec.prompt_hash = prompt_hash(req.text)
        if engine.store_prompts:
            rec.prompt = req.text
        chain = await _chain(engine, ep, req, rec)
        if engine.quota is not None:  # the key's budget and rate limits, as on chat (429 past them)
            await budget.reserve(engine.quota, rec, req, [engine.by_name[n] for n in chain], every=False)
        if streaming:
            opened = await dispatch.stream(chain, engine.by_name, req.forward(), rec, method=ep.stream_call)
            s = ChatStream(engine, rec, opened.slot, opened, include_usage=req.include_usage)
            rec.model = opened.slot.name
            await s.estimate_prompt_cost([{"role": "user", "content": req.text}])
            handed_over = True
            return s
        slot, out = await dispatch.complete(chain, engine.by_name, req.forward(), rec, method=ep.call)
        engine._answered(rec, slot, *_usage(out, req))
        rec.upstream_id = out.get("id") if isinstance(out.get("id"), str) else None
        out["model"] = slot.name
        engine._finish(rec, 200)
        return ChatAnswer(out, rec)
    except BaseException as exc:
        raise engine._failed(rec, _own_failure(ep, rec, exc))
    finally:
        if not handed_over:
            engine.release(rec)
