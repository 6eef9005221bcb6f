"""What one client key may spend and send: budgets, rate limits, and budget-aware routing.

Budgets are USD per UTC day and per UTC month; rate limits are requests and tokens per minute
(sliding window). As a key's spend approaches a budget, its routed requests get a cheaper knob
(``degrade_from``: the fraction of the budget where that starts; at 100% the knob is the cheapest
setting), so quality degrades gradually instead of stopping at a wall; past the budget: 429.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RequestError, TierwiseError

# USD are counted in integer pico-dollars, so every replica adds exactly the same amounts
PICO = 10 ** 12


@dataclass(frozen=True)
class KeyPolicy:
    name: str = ""
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    degrade_from: float | None = 0.8  # None: no budget-aware routing, a hard stop at the budget

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.usd_per_day, self.usd_per_month, self.requests_per_min,
                                           self.tokens_per_min))


class RateLimited(TierwiseError):
    """A key is over one of its limits: 429 in OpenAI's shape with x-ratelimit-* and retry-after."""

    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class TooLargeForLimit(RequestError):
    """One request needs more than a key's per-minute limit allows at all: waiting cannot help (400)."""

    code = "request_too_large"


class QuotaUnavailable(TierwiseError):
    """A limited key's request cannot be checked against its limits: the shared counters (Redis) are
    unreachable, or this gateway cannot keep them exact (several workers, no ``redis:``). 503, never
    a silent pass; the message names no address (that goes to the gateway's stderr)."""

    status, type, code = 503, "server_error", "quota_unavailable"


def cheaper_knob(rule: str, knob: float, used: float, degrade_from: float | None) -> float:
    """The knob for a key that has used ``used`` (0..1) of its tightest budget.

    Below ``degrade_from`` the knob is unchanged; from there to 100% it moves linearly to the
    cheapest setting of the rule (``cost_weight``: a weight that always picks the cheapest model;
    ``threshold``: 0, the cheapest model always clears it).
    """
    if degrade_from is None or used < degrade_from:
        return knob
    t = min(1.0, (used - degrade_from) / max(1e-9, 1.0 - degrade_from))
    cheapest = 0.0 if rule == "threshold" else max(knob, 1000.0)
    return knob + (cheapest - knob) * t
