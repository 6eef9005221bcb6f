"""Running a plan: call the chain's models in order until one answers.

The one fallback rule, for plain and streamed calls alike: a ``BackendError`` (connection, timeout,
429, 5xx, no free slot) is recorded and the next model is tried; ``UpstreamRejected`` (the backend
refused the request itself) ends the request at once with the backend's status and body -- the
client's own error is never retried elsewhere. A stream can fall back until its first answer chunk
arrives; after that the model is fixed and a failure ends the stream with an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Sequence

from ..backends.base import Completion, StreamTally
from ..errors import AllModelsFailed, BackendError, Overloaded, TierwiseError, UpstreamRejected
from .record import RequestRecord
from .slot import Slot, failure_reason, within


def record_failure(rec: RequestRecord, slot: Slot, exc: BaseException, *, streaming: bool = False) -> None:
    reason = failure_reason(exc)
    if reason == "timeout" and not isinstance(exc, BackendError):
        msg = f"{slot.name}: no {'first chunk' if streaming else 'answer'} within {slot.timeout_s:g}s"
    else:
        msg = str(exc) or type(exc).__name__
    rec.add_fallback(slot.name, reason, msg, public_reason(exc, reason, slot.timeout_s))


def public_reason(exc: BaseException, reason: str, timeout_s: float) -> str:
    """A failure as a client may hear of it: what happened, not where or what the upstream said."""
    if reason == "overloaded":
        return "busy (no free slot)"
    if reason == "timeout":
        return f"timed out ({timeout_s:g}s)"
    status = getattr(exc, "upstream_status", None)
    return f"HTTP {status}" if status else "backend error"


def tried(rec: RequestRecord) -> str:
    """``m0: HTTP 500; m1: timed out (10s)``: the models tried, for a client-facing message."""
    return "; ".join(f"{f['model']}: {f.get('public') or f['reason']}" for f in rec.fallbacks
                     if f["reason"] != "context")


def all_failed(rec: RequestRecord) -> TierwiseError:
    if rec.fallbacks and all(f["reason"] in ("overloaded", "context") for f in rec.fallbacks):
        return Overloaded(f"all models are busy ({tried(rec)})")
    return AllModelsFailed(f"every model in the pyramid failed ({tried(rec)})")


async def complete(chain: Sequence[str], slots: Mapping[str, Slot], body: dict[str, Any],
                   rec: RequestRecord, *, method: str = "complete") -> tuple[Slot, Completion]:
    """The first answer along ``chain`` (the backends' ``method``); failures recorded on ``rec``."""
    for name in chain:
        slot = slots[name]
        try:
            return slot, await slot.complete(body, method)
        except UpstreamRejected:
            raise
        except Exception as exc:
            record_failure(rec, slot, exc)
    raise all_failed(rec)


@dataclass
class OpenStream:
    """A stream whose first answer chunk has arrived: from here on its model is fixed."""

    slot: Slot
    chunks: AsyncIterator[dict[str, Any]]
    buffered: list[dict[str, Any]]
    tally: StreamTally = field(default_factory=StreamTally)
    _hold: Any = None
    _closed: bool = False

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        """Every chunk, buffered ones first; each gap bounded by the model's timeout."""
        for c in self.buffered:
            yield c
        self.buffered = []
        it = self.chunks.__aiter__()
        while True:
            try:
                chunk = await within(it.__anext__(), self.slot.timeout_s)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                self.slot.breaker.failure()
                raise BackendError(self.slot.name, f"stream stalled for {self.slot.timeout_s:g}s",
                                   timeout=True) from None
            except BackendError as exc:
                self.slot.judge(exc)
                raise
            self.tally.add(chunk)
            yield chunk

    async def aclose(self) -> None:
        """Stop the model (closing its generator cancels a local decode) and free the slot."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(BaseException):
            await self.chunks.aclose()
        if self._hold is not None:
            await self._hold.__aexit__(None, None, None)


async def open_stream(slot: Slot, body: dict[str, Any], method: str = "stream") -> OpenStream:
    """Start ``slot``'s stream (its backend's ``method``: ``stream``, or ``stream_text`` for legacy
    completions) and wait (within its timeout) for the first answer chunk or its end."""
    hold = slot.hold()
    await hold.__aenter__()
    slot.breaker.begin()
    agen = getattr(slot.backend, method)(body, timeout=slot.timeout_s)
    opened = OpenStream(slot, agen, [], _hold=hold)

    async def first() -> None:
        async for chunk in agen:
            opened.buffered.append(chunk)
            opened.tally.add(chunk)
            if opened.tally.started:
                return

    try:
        await within(first(), slot.timeout_s)
    except BaseException as exc:
        slot.judge(exc)
        await opened.aclose()
        raise
    slot.breaker.success()
    return opened


async def stream(chain: Sequence[str], slots: Mapping[str, Slot], body: dict[str, Any],
                 rec: RequestRecord, *, method: str = "stream") -> OpenStream:
    """The first stream along ``chain`` that starts answering; failures recorded on ``rec``."""
    for name in chain:
        slot = slots[name]
        try:
            return await open_stream(slot, body, method)
        except UpstreamRejected:
            raise
        except Exception as exc:
            record_failure(rec, slot, exc, streaming=True)
    raise all_failed(rec)
