"""What both surfaces' routes share: the decision-log row of a refused request, the event stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from ...engine.engine import Engine
from ...engine.record import RequestRecord
from ...engine.stream import ChatStream
from ...errors import TierwiseError
from ..responses import record_headers
from ..sse import GuardedStream

__all__ = ["record_rejected", "is_error_chunk", "event_stream"]


def record_rejected(engine: Engine, request_id: str, surface: str, exc: TierwiseError, *,
                    key_hash: str | None = None, **fields: Any) -> RequestRecord:
    """A request refused before the engine saw it (unparsable, invalid) still gets its decision-log
    row, as a malformed chat request does; ``fields``: more of the record (``stream``, ``requested_model``)."""
    rec = RequestRecord(id=request_id, ts=time.time(), surface=surface, status=exc.status, error=exc.message,
                        key_hash=key_hash, **fields)
    for listener in engine.listeners:
        try:
            listener(rec)
        except Exception:  # a broken listener must not fail the request
            pass
    return rec


def is_error_chunk(chunk: dict[str, Any]) -> bool:
    """The engine's mid-stream failure: an OpenAI error object in place of a chunk."""
    return "error" in chunk and "choices" not in chunk


def event_stream(stream: ChatStream, body: AsyncIterator[bytes],
                 headers: dict[str, str] | None = None) -> GuardedStream:
    """The streamed answer: ``body``'s events with the record's ``x-tierwise-*`` headers (+ ``headers``);
    the engine's stream is closed however the response ends."""
    head = {**record_headers(stream.record, stream.decision, cost_estimated=stream.cost_estimated),
            **(headers or {}), "cache-control": "no-cache"}
    return GuardedStream(body, stream.aclose, headers=head)
