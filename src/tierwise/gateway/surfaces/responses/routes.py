"""``POST /v1/responses``, ``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}``: OpenAI's Responses
API on the same engine as chat completions.

A request is checked and translated to a chat-completions body (``request``), routed and answered
by the engine exactly like ``/v1/chat/completions`` (decision log with ``surface`` = ``responses``,
``x-tierwise-*`` headers, cost, fallbacks, capability checks, client keys), and the answer is
translated back: a Response object (``answer``), or the Responses event stream (``stream``;
``event: <type>`` + ``data: <json>`` per event, no ``[DONE]``). The response id (``resp_`` + 32 hex
digits) is the decision-log row id and the ``x-request-id`` header.

With ``store`` (the default) the turn is kept in the decision-log database (table ``responses``:
the full chat-format conversation including this answer, and the Response object) so a follow-up
can send ``previous_response_id``; only the client key that created it (or an admin key) may
retrieve, delete or continue it when keys are configured; to any other key it does not exist (404).
Stored responses expire after ``responses_ttl_days`` (default 30).

Errors are OpenAI's ``{"error": {...}}`` with a 4xx naming the field; an upstream model's own
rejection of the request is returned as-is. Register with :func:`register` from ``create_app``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from ....decision_log import DecisionLog
from ....engine.body import load_json
from ....engine.engine import Engine
from ....engine.request import MAX_MODEL_NAME
from ....errors import LogError, RequestError, TierwiseError, UpstreamRejected
from ...guard import Client, Guard, while_connected
from ...responses import error_response, json_response, record_headers
from ...sse import named_event
from .._http import event_stream, is_error_chunk, record_rejected
from .answer import completion_to_response, new_response_id
from .items import items_to_messages
from .request import ResponsesCall, chat_body, parse_request
from .stream import StreamTranslator

__all__ = ["register", "sse_event"]

SURFACE = "responses"


def sse_event(ev: dict[str, Any]) -> bytes:
    """One Responses stream event: ``event: <type>`` and its JSON ``data``."""
    return named_event(str(ev.get("type", "message")), ev)


# the chat fields the engine's own checks name, as this surface calls them
_CHAT_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
                "response_format": "text.format"}


def _in_responses_terms(exc: TierwiseError) -> TierwiseError:
    """The engine checks the chat body this request became (capabilities, context), so its errors name chat
    fields; here they name the Responses fields they came from. A backend's own rejection stays as it is."""
    if isinstance(exc, UpstreamRejected) or not isinstance(exc.param, str):
        return exc
    head = exc.param.split(".", 1)[0]
    if head in _CHAT_PARAMS:
        exc.param = _CHAT_PARAMS[head]
        exc.message = exc.message.replace("max_tokens", "max_output_tokens")
        exc.args = (exc.message,)
    return exc


def _not_found(response_id: str) -> RequestError:
    return RequestError(f"Response with id '{response_id}' not found.", status=404, code="not_found")


def _requested_model(raw: bytes) -> str:
    try:
        body = load_json(raw)
    except (ValueError, TypeError):
        return ""
    model = body.get("model") if isinstance(body, dict) else None
    return model[:MAX_MODEL_NAME] if isinstance(model, str) else ""


def register(app: FastAPI, engine: Engine, guard: Guard, log: DecisionLog, *,
             ttl_days: float | None = None) -> None:
    """Add the Responses API routes to ``app`` (stored responses expire after ``ttl_days``)."""
    if ttl_days is not None:
        log.responses_ttl_days = float(ttl_days)
    log.prune_responses()  # expiry on startup; the writer prunes again at most hourly while storing

    def reject(rid: str, raw: bytes, client: Client, exc: TierwiseError) -> Response:
        """A request refused before the engine saw it still gets its decision-log row (as chat's do)."""
        record_rejected(engine, rid, SURFACE, exc, key_hash=client.key_hash, requested_model=_requested_model(raw))
        return error_response(exc, {"x-request-id": rid})

    async def load(response_id: str, client: Client) -> dict[str, Any] | None:
        try:
            row = await asyncio.to_thread(log.get_response, response_id)
        except Exception as exc:
            raise LogError(f"stored responses unavailable ({type(exc).__name__}: {exc})") from None
        if row is None or not (client.admin or row.get("key_hash") == client.key_hash):
            return None  # another key's response does not exist for this client
        return row

    def store(call: ResponsesCall, rid: str, history: list[dict[str, Any]], resp: dict[str, Any],
              key_hash: str | None) -> None:
        if not call.store or resp.get("status") not in ("completed", "incomplete"):
            return
        try:
            messages = history + call.turn + items_to_messages(resp["output"], prefix="output")
        except TierwiseError:
            return
        log.store_response(rid, messages, resp, key_hash=key_hash, ts=resp.get("created_at"))

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        try:
            client = guard.check_auth(request)
        except TierwiseError as exc:
            return error_response(exc)  # unauthenticated traffic is neither answered nor logged
        rid = new_response_id()
        raw = b""
        try:
            check_json = getattr(guard, "check_json", None)
            if check_json is not None:
                check_json(request)
            raw = await guard.read_body(request)
        except TierwiseError as exc:
            return error_response(exc)
        key_hash = client.key_hash
        try:
            call = parse_request(raw)
            history: list[dict[str, Any]] = []
            if call.previous_response_id:
                prev = await load(call.previous_response_id, client)
                if prev is None:
                    raise RequestError(f"Previous response with id '{call.previous_response_id}' not found.",
                                       status=404, param="previous_response_id", code="previous_response_not_found")
                history = prev["messages"]
            body = chat_body(call, history)
        except TierwiseError as exc:
            return reject(rid, raw, client, exc)

        try:
            # a client that hangs up while waiting (for the answer, or a stream's first chunk) stops the model
            if call.stream:
                stream = await while_connected(request, engine.chat_stream(body, request_id=rid, surface=SURFACE,
                                                                           key_hash=key_hash))
            else:
                answer = await while_connected(request, engine.chat(body, request_id=rid, surface=SURFACE,
                                                                    key_hash=key_hash))
        except TierwiseError as exc:
            rec = getattr(exc, "record", None)
            return error_response(_in_responses_terms(exc), record_headers(rec) if rec is not None else None)

        if not call.stream:
            rec = answer.record
            resp = completion_to_response(call, answer.body, response_id=rid, created_at=rec.ts,
                                          usage_fallback=(rec.tokens_in, rec.tokens_out))
            store(call, rid, history, resp, key_hash)
            return json_response(resp, 200, record_headers(rec, answer.decision))

        translator = StreamTranslator(call, response_id=rid, model=stream.slot.name, created_at=stream.record.ts)

        async def events():
            for ev in translator.start():
                yield sse_event(ev)
            failed = False
            async for chunk in stream:  # run to the end even after an error chunk: the record is finished then
                if is_error_chunk(chunk):
                    failed = True
                    for ev in translator.fail(chunk.get("error")):
                        yield sse_event(ev)
                    continue
                if not failed:
                    for ev in translator.feed(chunk):
                        yield sse_event(ev)
            if failed:
                return
            rec = stream.record
            final = translator.finish((rec.tokens_in, rec.tokens_out))
            if translator.response is not None:  # stored before the client sees response.completed
                store(call, rid, history, translator.response, key_hash)
            for ev in final:
                yield sse_event(ev)

        return event_stream(stream, events())

    @app.get("/v1/responses/{response_id}")
    async def retrieve_response(response_id: str, request: Request) -> Response:
        row = await load(response_id, guard.check_auth(request))
        if row is None:
            raise _not_found(response_id)
        if request.query_params.get("stream", "").lower() in ("true", "1"):  # the SDK's retrieve(stream=True)
            raise RequestError("streaming a stored response again (background mode) is not supported: retrieve it "
                               "without 'stream'", param="stream", code="unsupported_parameter")
        return json_response(row["response"])

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, request: Request) -> Response:
        if await load(response_id, guard.check_auth(request)) is None:
            raise _not_found(response_id)
        await asyncio.wrap_future(log.delete_response(response_id))
        return json_response({"id": response_id, "object": "response", "deleted": True})
