"""Routing decisions of the requests that arrive together, made as one batch.

Under load many routed requests are parsed in the same turn of the event loop. Each one queues its
decision here and waits; at the loop's next turn every queued decision is made by one
``router.route_many`` call (one featurisation, one quality and one cost prediction for all: the
fixed cost of a decision is paid once per batch). A request alone is decided alone, one loop turn
later (microseconds): batching adds no timer and no wait for company.

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
    key: str | None
    future: asyncio.Future


class RouteBatcher:
    """Queue of routing decisions, flushed once per event-loop turn (see the module doc)."""

    def __init__(self, router: Any, max_batch: int = MAX_BATCH):
        self.router = router
        self.max_batch = max(1, int(max_batch))
        self._queue: list[_Queued] = []
        self._scheduled = False
        self.batches = 0  # router calls made (a batch of one included)
        self.decisions = 0

    def decide(self, text: str, knob: Any, allowed: Sequence[str], key: str | None = None) -> "asyncio.Future[Routed]":
        """A future for this request's decision, made at the loop's next turn with every other one queued."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append(_Queued(text, knob, allowed, key, fut))
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
        many = getattr(self.router, "route_many", None)
        results: list[Decision | str]
        if many is not None and len(batch) > 1:
            try:
                results = list(many([q.text for q in batch], [q.knob for q in batch], [q.allowed for q in batch],
                                    [q.key for q in batch]))
            except Exception:  # noqa: BLE001 - decided again one by one: only the bad request fails
                results = [self._one(q) for q in batch]
        else:
            results = [self._one(q) for q in batch]
        ms = (time.perf_counter() - t) * 1000
        self.batches += 1
        self.decisions += len(batch)
        for q, res in zip(batch, results):
            if not q.future.done():
                q.future.set_result(Routed(None, res, ms, len(batch)) if isinstance(res, str)
                                    else Routed(res, None, ms, len(batch)))

    def _one(self, q: _Queued) -> Decision | str:
        try:
            if q.key is None:
                return self.router.route(q.text, knob=q.knob, allowed=q.allowed)
            return self.router.route(q.text, knob=q.knob, allowed=q.allowed, request_id=q.key)
        except Exception as exc:  # a broken router must not take the gateway down; the record shows it
            return f"router failed: {type(exc).__name__}: {exc}"[:300]
