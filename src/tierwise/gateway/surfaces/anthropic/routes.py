"""``POST /v1/messages``: the Anthropic Messages API, routed like chat.

The request is validated and translated to a chat-completions body (``request``), the engine
routes it exactly as ``/v1/chat/completions`` (surface ``messages`` in the record: the decision
log, metrics, ``tierwise stats``), and the answer (``answer``) or stream (``stream``) is translated
back. Same ``x-tierwise-*`` headers, client keys (``x-api-key`` or ``Authorization: Bearer``), body
limit, fallbacks and capability checks as chat. Also ``POST /v1/messages/count_tokens``.

Errors come in Anthropic's shape (``errors``), ``{"type": "error", "error": {"type", "message"}, "request_id"}``:

=====================================  ======  =====================
tierwise error                         status  ``error.type``
=====================================  ======  =====================
malformed request (incl. 422s)         400     invalid_request_error
no model has a needed capability       400     invalid_request_error
bad / missing key                      401     authentication_error
unknown model                          404     not_found_error
body too large                         413     request_too_large
upstream 4xx rejection                 same    by status (400/422: invalid_request_error)
gateway overloaded (503 on chat)       529     overloaded_error (Anthropic's status; ``retry-after`` kept)
every model failed                     502     api_error
=====================================  ======  =====================

The message id is the gateway's request id (``msg_<hex>``): the same in the body, ``x-request-id``,
``request-id`` (what the anthropic SDK reads as ``_request_id``) and the decision-log row.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from ....engine.engine import Engine
from ....engine.record import RequestRecord
from ....engine.request import ChatRequest
from ....engine.stream import ChatStream
from ....errors import RequestError, TierwiseError
from ...guard import Guard, while_connected
from ...responses import json_response, record_headers
from ...sse import named_event
from .._chat import new_id
from .._http import event_stream, is_error_chunk, record_rejected
from .answer import to_message
from .errors import error_body, wire_error
from .request import to_chat
from .schema import parse_json
from .stream import StreamTranslator, stream_error_event

__all__ = ["register"]

SURFACE = "messages"


def error_response(exc: TierwiseError, rec: RequestRecord | None = None, request_id: str | None = None) -> Response:
    rid = rec.id if rec is not None else request_id
    status, body = wire_error(exc, rid)
    headers = {**exc.headers, **(record_headers(rec) if rec is not None else {})}
    if rid:
        headers["request-id"] = rid
    return json_response(body, status, headers)


async def _read(request: Request, guard: Guard) -> Any:
    guard.check_json(request)
    return parse_json(await guard.read_body(request))


def _sse(stream: ChatStream, translator: StreamTranslator) -> Response:
    async def body():
        try:
            for name, data in translator.start():
                yield named_event(name, data)
            async for chunk in stream:
                if is_error_chunk(chunk):  # the model failed mid-stream
                    yield named_event(*stream_error_event(chunk))
                    return
                for name, data in translator.feed(chunk):
                    yield named_event(name, data)
            rec = stream.record
            for name, data in translator.finish(input_tokens=rec.tokens_in, output_tokens=rec.tokens_out):
                yield named_event(name, data)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:  # never a traceback on the wire
            yield named_event("error", error_body("api_error", f"internal error: {type(exc).__name__}"))

    return event_stream(stream, body(), {"request-id": stream.record.id})


def register(app: FastAPI, engine: Engine, guard: Guard) -> None:
    """Add ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` to the gateway app."""

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        rid = new_id("msg")
        try:
            client = guard.check_auth(request)
        except TierwiseError as exc:
            return error_response(exc, request_id=rid)  # unauthenticated traffic is neither answered nor logged
        streaming = False
        try:
            raw = await _read(request, guard)
            streaming = isinstance(raw, dict) and raw.get("stream") is True
            chat = to_chat(raw)
        except TierwiseError as exc:
            rec = record_rejected(engine, rid, SURFACE, exc, key_hash=client.key_hash, stream=streaming)
            return error_response(exc, rec)
        kw = {"request_id": rid, "surface": SURFACE, "key_hash": client.key_hash}
        try:
            if chat.get("stream"):
                stream = await while_connected(request, engine.chat_stream(chat, **kw))
                translator = StreamTranslator(rid, stream.record.model or stream.slot.name,
                                              input_tokens=int(getattr(stream, "_prompt_tokens", 0) or 0),
                                              stop_sequences=tuple(chat.get("stop") or ()))
                return _sse(stream, translator)
            answer = await while_connected(request, engine.chat(chat, **kw))
        except TierwiseError as exc:
            return error_response(exc, getattr(exc, "record", None), rid)
        except Exception as exc:  # the engine turns its own failures into TierwiseError; this is a last resort
            return error_response(TierwiseError(f"internal error: {type(exc).__name__}"), request_id=rid)
        rec = answer.record
        body = to_message(answer.body, msg_id=rid, model=rec.model or "", stop_sequences=chat.get("stop") or (),
                          tokens_in=rec.tokens_in, tokens_out=rec.tokens_out)
        return json_response(body, 200, {**record_headers(rec, answer.decision), "request-id": rid})

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request) -> Response:
        """``{"input_tokens": n}`` by the tokenizer of the named pyramid model (routed names: the
        cheapest model's). No model is called and nothing is logged."""
        try:
            guard.check_auth(request)
            raw = await _read(request, guard)
            if isinstance(raw, dict):
                raw = {"max_tokens": 1, **raw}  # count_tokens takes no max_tokens
            req = ChatRequest.parse(to_chat(raw))
            engine.check_model(req.model)  # an unknown model is a 404, a bad knob a 400, as on /v1/messages
            backend = (engine.by_name.get(req.model) or engine.slots[0]).backend
            count = backend.count_tokens
            n = await asyncio.to_thread(count, req.messages, req.prompt_tools) \
                if not getattr(backend, "cheap_count", True) else count(req.messages, req.prompt_tools)
        except TierwiseError as exc:
            return error_response(exc)
        except Exception as exc:
            return error_response(TierwiseError(f"internal error: {type(exc).__name__}"))
        return json_response({"input_tokens": int(n)})

    @app.api_route("/v1/messages", methods=["GET", "PUT", "PATCH", "DELETE"])
    @app.api_route("/v1/messages/count_tokens", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def messages_method(request: Request) -> Response:
        return error_response(RequestError(f"{request.method} {request.url.path}: method not allowed; use POST",
                                           status=405, code="method_not_allowed"))

    @app.api_route("/v1/messages/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def messages_other(rest: str, request: Request) -> Response:
        """Anthropic's other message endpoints (``batches``, ...): not served, said in Anthropic's shape."""
        return error_response(RequestError(f"{request.method} /v1/messages/{rest[:100]}: not served by this gateway "
                                           "(only POST /v1/messages and /v1/messages/count_tokens)",
                                           status=404, code="not_found"))
