"""The one server-sent-events encoder, and a streaming response that always cleans up."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"


def event(obj: Any) -> bytes:
    """One ``data:`` event with compact JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def named_event(kind: str, obj: Any) -> bytes:
    """One named event, ``event: <kind>`` before :func:`event`'s ``data:`` line (as Anthropic's
    Messages and OpenAI's Responses streams frame every event)."""
    return b"event: " + kind.encode() + b"\n" + event(obj)


class GuardedStream(StreamingResponse):
    """A streaming response whose ``cleanup`` runs even if the client leaves before the body starts
    (then Starlette never iterates the generator, so the generator's own ``finally`` never runs)."""

    def __init__(self, content: Any, cleanup: Any, **kwargs: Any):
        kwargs.setdefault("media_type", "text/event-stream")
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()
