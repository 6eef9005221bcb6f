"""``POST /v1/embeddings`` and legacy ``POST /v1/completions``: forwarded to one pyramid model, not routed.

The engine does the work (``engine/passthrough.py``: which model, capability checks, slots,
breaker, fallback for completions only, the record); this shell is chat's: client keys, JSON content
type, body limit and deadline, a non-streamed request cancelled when the client hangs up (499),
OpenAI's error shape with the record's ``x-tierwise-*`` headers, and for ``stream: true``
completions the ``text_completion`` chunks as server-sent events ending with ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..engine.engine import Engine
from ..engine.stream import ChatStream
from ..errors import TierwiseError
from .guard import Guard, while_connected
from .responses import error_response, json_response, record_headers

__all__ = ["register"]


def register(app: FastAPI, engine: Engine, guard: Guard) -> None:
    """Add ``POST /v1/embeddings`` and ``POST /v1/completions`` to the gateway app."""
    from .app import _sse  # the chat stream encoder (imported here: app imports this module)

    async def serve(request: Request, call: Callable[..., Awaitable[Any]]) -> Response:
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
            return _sse(result)
        return json_response(result.body, 200, record_headers(result.record))

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await serve(request, engine.embed)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(request, engine.handle_text)
