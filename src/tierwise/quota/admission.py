"""Admission control per client key: check and reserve before a request runs, settle after.

``Quota.admit`` reserves the request's maximum cost (its most expensive candidate at its answer
budget) and counts it against requests/tokens per minute, or raises :class:`RateLimited` (429 with
``x-ratelimit-*`` and ``retry-after``: the time until the sliding window admits it). A request whose
prompt alone is over the key's tokens per minute is a 400 (:class:`TooLargeForLimit`): waiting cannot
help. ``Quota.settle`` swaps the reservation for the actual cost and the prompt-token estimate for
the prompt's actual tokens.

Limits are only enforced where they can be kept exact: one worker, or counters shared in Redis. A
gateway of several workers without ``redis:`` refuses a limited key's requests (503
``quota_unavailable``, naming the fix) instead of letting each worker count on its own; so does any
gateway whose Redis cannot be reached (keys without limits are served as usual).
``Quota.used`` is the fraction of the tightest budget a key has used: the engine turns it into a
cheaper knob (:func:`tierwise.quota.policy.cheaper_knob`).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .policy import PICO, KeyPolicy, QuotaUnavailable, RateLimited, TooLargeForLimit
from .state import Buckets, MemoryState, QuotaState, Verdict, retry_after, window_wait

_WHAT = {"budget_day": "its daily budget", "budget_month": "its monthly budget",
         "requests": "its requests per minute", "tokens": "its tokens per minute"}


def _who(p: KeyPolicy) -> str:
    return f"key '{p.name}'" if p.name else "this API key"


@dataclass
class Ticket:
    """One admitted request's reservation, settled once."""

    key: str
    policy: KeyPolicy
    buckets: Buckets
    reserved_pico: int
    verdict: Verdict
    settled: bool = field(default=False)
    reserved_tokens: int = 0  # the prompt-token estimate counted at admission

    def headers(self) -> dict[str, str]:
        p, v, h = self.policy, self.verdict, {}
        if p.requests_per_min is not None:
            h["x-ratelimit-limit-requests"] = str(p.requests_per_min)
            h["x-ratelimit-remaining-requests"] = str(max(0, int(p.requests_per_min - v.requests_in_window - 1)))
            # until the window admits the key's next request (this one included when it was admitted)
            wait = window_wait(v.requests_prev, v.requests_cur + (1 if v.ok else 0), self.buckets.into_minute,
                               p.requests_per_min, 1)
            h["x-ratelimit-reset-requests"] = f"{math.ceil(wait if wait is not None else 60.0)}s"
        if p.tokens_per_min is not None:
            h["x-ratelimit-limit-tokens"] = str(p.tokens_per_min)
            h["x-ratelimit-remaining-tokens"] = str(max(0, int(p.tokens_per_min - v.tokens_in_window)))
        if p.usd_per_day is not None:
            h["x-tierwise-budget-day-remaining-usd"] = f"{max(0.0, p.usd_per_day - v.spent_day_pico / PICO):.6f}"
        return h


class Quota:
    """The limited keys' policies (``policies``: key hash -> policy) and the counters they use."""

    def __init__(self, policies: dict[str, KeyPolicy], state: QuotaState | None = None, *, workers: int = 1):
        self.state: Any = state if state is not None else MemoryState()
        self._warned: set[str] = set()
        self._workers = max(1, int(workers))
        self.policies = policies

    @property
    def policies(self) -> dict[str, KeyPolicy]:
        return self._policies

    @policies.setter
    def policies(self, value: dict[str, KeyPolicy]) -> None:
        self._policies = {k: p for k, p in value.items() if p.limited}
        self._warn_unenforceable()

    @property
    def workers(self) -> int:
        """How many worker processes serve this gateway (``tierwise serve --workers``)."""
        return self._workers

    @workers.setter
    def workers(self, n: int) -> None:
        self._workers = max(1, int(n))
        self._warn_unenforceable()

    @property
    def exact(self) -> bool:
        """Whether limits hold exactly here: one worker, or counters shared by every worker (Redis)."""
        return self._workers <= 1 or bool(getattr(self.state, "shared", False))

    def _unenforceable(self, p: KeyPolicy) -> QuotaUnavailable:
        return QuotaUnavailable(
            f"{_who(p)} has budgets or rate limits, but this gateway runs {self._workers} workers without shared "
            "counters, so they cannot be kept exact and its requests are refused: set `redis: redis://HOST:6379/0` "
            "in the pyramid YAML and restart the gateway (or run it with one worker)")

    def _warn_unenforceable(self) -> None:
        """Say once per key, on the gateway's stderr, that its requests will be refused."""
        if self.exact:
            return
        for h, p in self._policies.items():
            if h not in self._warned:
                self._warned.add(h)
                print(f"tierwise: {self._unenforceable(p).message}", file=sys.stderr, flush=True)

    def policy(self, key: str | None) -> KeyPolicy | None:
        return None if key is None else self._policies.get(key)

    async def used(self, key: str | None) -> float | None:
        """Fraction (0..) of the key's tightest budget spent or reserved; None without budgets."""
        p = self.policy(key)
        if p is None or (p.usd_per_day is None and p.usd_per_month is None):
            return None
        if not self.exact:
            raise self._unenforceable(p)
        day, month = await self.state.spent(key, Buckets.at(time.time()))
        fractions = [s / (b * PICO) for s, b in ((day, p.usd_per_day), (month, p.usd_per_month)) if b]
        return max(fractions) if fractions else None

    async def admit(self, key: str | None, reserve_usd: float, prompt_tokens: int) -> Ticket | None:
        p = self.policy(key)
        if p is None:
            return None
        if not self.exact:
            raise self._unenforceable(p)
        tokens = max(0, int(prompt_tokens))
        if p.tokens_per_min is not None and tokens > p.tokens_per_min:
            raise TooLargeForLimit(
                f"{_who(p)}: this request's prompt is about {tokens} tokens, more than its tokens per minute "
                f"({p.tokens_per_min}): it can never be admitted, whatever the wait; shorten the messages or tool "
                "definitions, or raise the key's tokens_per_min")
        now = time.time()
        b = Buckets.at(now)
        reserve = int(math.ceil(max(0.0, reserve_usd) * PICO))
        v = await self.state.admit(key, p, b, reserve, tokens)
        ticket = Ticket(key, p, b, reserve, v, settled=not v.ok, reserved_tokens=tokens)
        if not v.ok:
            wait = math.ceil(retry_after(v, p, b, now, tokens))
            headers = ticket.headers()
            if v.reason in ("requests", "tokens"):
                headers[f"x-ratelimit-reset-{v.reason}"] = f"{wait}s"
            raise RateLimited(f"{_who(p)} is over {_WHAT[v.reason]}; retry in {wait}s",
                              code="insufficient_quota" if v.reason.startswith("budget") else "rate_limit_exceeded",
                              headers={**headers, "retry-after": str(wait)})
        return ticket

    async def settle(self, ticket: Ticket | None, actual_usd: float, tokens_out: int, *,
                     tokens_in: int | None = None) -> None:
        """The actual cost and completion tokens replace the reservation; ``tokens_in``, the prompt's
        actual tokens, replaces the estimate counted at admission (None: the estimate stands)."""
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        delta = 0 if tokens_in is None else max(0, int(tokens_in)) - ticket.reserved_tokens
        try:
            await self.state.settle(ticket.key, ticket.buckets, ticket.reserved_pico,
                                    int(round(max(0.0, actual_usd) * PICO)), max(0, int(tokens_out)), delta)
        except QuotaUnavailable:
            pass  # the store said why on stderr; the reservation stays counted (over, never under)

    async def health(self) -> dict[str, Any]:
        """For ``/health``: where the counters live and whether limited keys can be served."""
        shared = bool(getattr(self.state, "shared", False))
        out: dict[str, Any] = {"status": "ok", "store": "redis" if shared else "memory",
                               "limited_keys": len(self._policies)}
        if not self.exact and self._policies:
            out.update(status="degraded", error=f"{len(self._policies)} limited key(s) refused: {self._workers} "
                                                "workers without `redis:` cannot keep their limits exact")
        elif shared:
            try:
                await asyncio.wait_for(self.state.ping(), 2.0)
            except (QuotaUnavailable, asyncio.TimeoutError):
                out.update(status="degraded", error="the quota store (redis) is unreachable: limited keys get 503 "
                                                    "quota_unavailable")
        return out

    async def aclose(self) -> None:
        await self.state.aclose()
