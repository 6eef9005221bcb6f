"""The engine layer: route + call + fall back + record, usable without a server.

``request`` (parse the client's body) -> ``candidates`` (capability / context checks) -> ``plan``
(routed, cascade or direct) -> ``dispatch`` / ``cascade`` (slots, deadlines, fallback) -> ``record``
(the typed per-request record the log and metrics consume). ``Engine`` ties them together.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Engine", "ChatAnswer", "ChatStream", "ChatRequest", "RequestRecord", "Slot", "Cascade"]


def __getattr__(name: str) -> Any:  # lazy: the decision log imports engine.record without the rest
    if name in ("Engine", "ChatAnswer"):
        from . import engine

        return getattr(engine, name)
    if name == "ChatStream":
        from .stream import ChatStream

        return ChatStream
    if name == "ChatRequest":
        from .request import ChatRequest

        return ChatRequest
    if name == "RequestRecord":
        from .record import RequestRecord

        return RequestRecord
    if name == "Slot":
        from .slot import Slot

        return Slot
    if name == "Cascade":
        from .cascade import Cascade

        return Cascade
    raise AttributeError(name)
