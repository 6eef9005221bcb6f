"""The one route body of the OpenAI-shaped POST endpoints: ``/v1/chat/completions``, ``/v1/embeddings``
and legacy ``/v1/completions`` differ only in the engine call.

The client's key first (unauthenticated traffic is neither answered nor logged), then a JSON body
within the size limit and deadline, the engine call while the client stays connected (a client
that hangs up cancels it: 499), and the answer as JSON or, for a started stream, its chunks as
server-sent events ending with ``data: [DONE]``. Errors are OpenAI's shape, with the record's
``x-tierwise-*`` headers when the engine made one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..engine.stream import ChatStream
from ..errors import TierwiseError
from .guard import Guard, while_connected
from .responses import error_response, json_response, record_headers
from .sse import DONE, GuardedStream, event

__all__ = ["answer", "sse"]


async def answer(request: Request, guard: Guard, call: Callable[..., Awaitable[Any]]) -> Response:
    """``call(body, key_hash=...)`` (an engine method returning an answer or a started stream), as HTTP."""
    try:
        client = guard.check_auth(request)
    except TierwiseError as exc:
        return error_response(exc)  # unauthenticated traffic is neither answered nor logged
    try:
        guard.check_json(request)
        body = await guard.read_body(request)
        result = await while_connected(request, call(body, key_hash=client.key_hash))
    except TierwiseError as exc:
        rec = getattr(exc, "record", None)
        return error_response(exc, record_headers(rec) if rec is not None else None)
    if isinstance(result, ChatStream):
        return sse(result)
    return json_response(result.body, 200, record_headers(result.record, result.decision))


def sse(stream: ChatStream) -> Response:
    """A started stream's chunks as ``data:`` events, ``data: [DONE]`` last (not after a mid-stream
    error object); the stream is closed however the response ends."""
    async def body():
        async for chunk in stream:
            yield event(chunk)
            if "error" in chunk and "choices" not in chunk:
                return
        yield DONE

    headers = {**record_headers(stream.record, stream.decision, cost_estimated=stream.cost_estimated),
               "cache-control": "no-cache"}
    return GuardedStream(body(), stream.aclose, headers=headers)
