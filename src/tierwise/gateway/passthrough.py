"""``POST /v1/embeddings`` and legacy ``POST /v1/completions``: forwarded to one pyramid model, not routed.

The engine does the work (``engine/passthrough.py``: which model, capability checks, slots,
breaker, fallback for completions only, the record); the HTTP side is chat's (``openai_route``):
client keys, JSON content type, body limit and deadline, a non-streamed request cancelled when the
client hangs up (499), OpenAI's error shape with the record's ``x-tierwise-*`` headers, and for
``stream: true`` completions the ``text_completion`` chunks as server-sent events, ``data: [DONE]`` last.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..engine.engine import Engine
from . import openai_route
from .guard import Guard

__all__ = ["register"]


def register(app: FastAPI, engine: Engine, guard: Guard) -> None:
    """Add ``POST /v1/embeddings`` and ``POST /v1/completions`` to the gateway app."""

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await openai_route.answer(request, guard, engine.embed)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await openai_route.answer(request, guard, engine.handle_text)
