"""Routing decisions of the requests that arrive together, made as one batch.

Under load many routed requests are parsed in the same turn of the event loop. Each one queues its
decision here and waits; at the loop's next turn every queued decision is made by one
``router.route_many`` call (one featurisation, one quality and one cost prediction for all: the
fixed cost of a decision is paid once per batch). A request alone is decided alone, one loop turn
later (microseconds): batching adds no timer and no wait for company.

With a ``RouterProcess`` (``engine.router_process``) a batch of two or more, or any batch while the
process is still deciding an earlier one, is sent to the router's own process and answered when its
decisions come back; meanwhile the loop goes on with other requests. A request alone while that
process idles is decided in the loop (no round trip added to an unloaded gateway's latency).
A router without ``route_many`` (a user's own) is called once per request, as before. A batch that
fails is decided again one request at a time, so one bad prompt cannot fail the others; a request
whose decision fails gets the error (the plan then starts at the most capable model).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..decision import Decision

MAX_BATCH = 64  # decisions per router call (past ~32 a bigger batch saves nothing per decision)


@dataclass
class Routed:
    """One request's decision (or why there is none) and what deciding it cost."""

    decision: Decision | None
    error: str | None
    route_ms: float  # wall time of the router call that decided it (its whole batch's)
    batch: int  # how many requests that call decided


@dataclass
class _Queued:
    text: str
    knob: Any
    allowed: Sequence[str]
    future: asyncio.Future


class RouteBatcher:
    """Queue of routing decisions, flushed once per event-loop turn (see the module doc)."""

    def __init__(self, router: Any, max_batch: int = MAX_BATCH, remote: Any = None):
        self.router = router
        self.max_batch = max(1, int(max_batch))
        self.remote = remote  # a RouterProcess deciding for this router, or None: decided in the loop
        self._queue: list[_Queued] = []
        self._scheduled = False
        self.batches = 0  # router calls made (a batch of one included)
        self.decisions = 0

    def decide(self, text: str, knob: Any, allowed: Sequence[str]) -> "asyncio.Future[Routed]":
        """A future for this request's decision, made at the loop's next turn with every other one queued."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append(_Queued(text, knob, allowed, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        queue, self._queue, self._scheduled = self._queue, [], False
        live = [q for q in queue if not q.future.done()]  # a client that went away needs no decision
        for start in range(0, len(live), self.max_batch):
            self._decide(live[start:start + self.max_batch])

    def _decide(self, batch: list[_Queued]) -> None:
        t = time.perf_counter()
        self.batches += 1
        self.decisions += len(batch)
        remote = self.remote
        # a request alone while the router process idles is decided here: sending it would only add the
        # round trip to its latency; batches (a busy loop) and requests arriving while one is out go there
        if remote is not None and remote.alive and (len(batch) > 1 or remote.busy) and remote.submit(
                [q.text for q in batch], [q.knob for q in batch], [q.allowed for q in batch],
                lambda rows: self._from_process(batch, t, rows)):
            return
        self._answered(batch, t, self._here(batch))

    def _from_process(self, batch: list[_Queued], t: float, rows: list | None) -> None:
        try:
            results = None if rows is None else self.remote.decisions(rows)
        except Exception:  # noqa: BLE001 - an answer that does not fit this router: decide here
            results = None
        self._answered(batch, t, results)

    def _here(self, batch: list[_Queued]) -> list[Decision | str]:
        """The batch decided in this process."""
        return decide_all(self.router, [q.text for q in batch], [q.knob for q in batch], [q.allowed for q in batch])

    def _answered(self, batch: list[_Queued], t: float, results: list[Decision | str] | None) -> None:
        if results is None:  # the router process died with this batch (or answered nonsense): decide it here
            results = self._here(batch)
        ms = (time.perf_counter() - t) * 1000
        for q, res in zip(batch, results):
            if not q.future.done():
                q.future.set_result(Routed(None, res, ms, len(batch)) if isinstance(res, str)
                                    else Routed(res, None, ms, len(batch)))


def decide_all(router: Any, texts: Sequence[str], knobs: Sequence, allowed: Sequence) -> list[Decision | str]:
    """Each request's decision, or the text of its router error: one ``route_many`` call for the lot; if
    that fails (or the router has none), one ``route`` per request, so only a bad request fails."""
    many = getattr(router, "route_many", None)
    if many is not None and len(texts) > 1:
        try:
            return list(many(texts, knobs, allowed, None))  # no request ids: guard coins are seeded by the prompt
        except Exception:  # noqa: BLE001 - decided again one by one below
            pass
    out: list[Decision | str] = []
    for text, knob, names in zip(texts, knobs, allowed):
        try:
            out.append(router.route(text, knob=knob, allowed=names))
        except Exception as exc:  # a broken router must not take the gateway down; the record shows it
            out.append(f"router failed: {type(exc).__name__}: {exc}"[:300])
    return out
