"""Admission control per client key: check and reserve before a request runs, settle after.

``Quota.admit`` reserves the request's maximum cost (its most expensive candidate at its answer
budget) and counts it against requests/tokens per minute, or raises :class:`RateLimited` (429 with
``x-ratelimit-*`` and ``retry-after``). ``Quota.settle`` swaps the reservation for the actual cost.
``Quota.used`` is the fraction of the tightest budget a key has used: the engine turns it into a
cheaper knob (:func:`tierwise.quota.policy.cheaper_knob`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .policy import PICO, KeyPolicy, RateLimited
from .state import Buckets, MemoryState, QuotaState, Verdict, retry_after

_WHAT = {"budget_day": "its daily budget", "budget_month": "its monthly budget",
         "requests": "its requests per minute", "tokens": "its tokens per minute"}


@dataclass
class Ticket:
    """One admitted request's reservation, settled once."""

    key: str
    policy: KeyPolicy
    buckets: Buckets
    reserved_pico: int
    verdict: Verdict
    settled: bool = field(default=False)

    def headers(self) -> dict[str, str]:
        p, v, h = self.policy, self.verdict, {}
        if p.requests_per_min is not None:
            h["x-ratelimit-limit-requests"] = str(p.requests_per_min)
            h["x-ratelimit-remaining-requests"] = str(max(0, int(p.requests_per_min - v.requests_in_window - 1)))
            h["x-ratelimit-reset-requests"] = f"{60 * (1 - self.buckets.into_minute):.0f}s"
        if p.tokens_per_min is not None:
            h["x-ratelimit-limit-tokens"] = str(p.tokens_per_min)
            h["x-ratelimit-remaining-tokens"] = str(max(0, int(p.tokens_per_min - v.tokens_in_window)))
        if p.usd_per_day is not None:
            h["x-tierwise-budget-day-remaining-usd"] = f"{max(0.0, p.usd_per_day - v.spent_day_pico / PICO):.6f}"
        return h


class Quota:
    def __init__(self, policies: dict[str, KeyPolicy], state: QuotaState | None = None):
        self.policies = {k: p for k, p in policies.items() if p.limited}
        self.state = state or MemoryState()

    def policy(self, key: str | None) -> KeyPolicy | None:
        return None if key is None else self.policies.get(key)

    async def used(self, key: str | None) -> float | None:
        """Fraction (0..) of the key's tightest budget spent or reserved; None without budgets."""
        p = self.policy(key)
        if p is None or (p.usd_per_day is None and p.usd_per_month is None):
            return None
        day, month = await self.state.spent(key, Buckets.at(time.time()))
        fractions = [s / (b * PICO) for s, b in ((day, p.usd_per_day), (month, p.usd_per_month)) if b]
        return max(fractions) if fractions else None

    async def admit(self, key: str | None, reserve_usd: float, prompt_tokens: int) -> Ticket | None:
        p = self.policy(key)
        if p is None:
            return None
        now = time.time()
        b = Buckets.at(now)
        reserve = int(math.ceil(max(0.0, reserve_usd) * PICO))
        v = await self.state.admit(key, p, b, reserve, int(prompt_tokens))
        ticket = Ticket(key, p, b, reserve, v, settled=not v.ok)
        if not v.ok:
            wait = retry_after(v.reason, b, now)
            name = f"key '{p.name}'" if p.name else "this API key"
            raise RateLimited(f"{name} is over {_WHAT[v.reason]}; retry in {wait:.0f}s",
                              code="insufficient_quota" if v.reason.startswith("budget") else "rate_limit_exceeded",
                              headers={**ticket.headers(), "retry-after": f"{math.ceil(wait)}"})
        return ticket

    async def settle(self, ticket: Ticket | None, actual_usd: float, tokens_out: int) -> None:
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        await self.state.settle(ticket.key, ticket.buckets, ticket.reserved_pico,
                                int(round(max(0.0, actual_usd) * PICO)), int(tokens_out))

    async def aclose(self) -> None:
        await self.state.aclose()
