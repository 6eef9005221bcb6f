"""Per-model circuit breaker: a dead model costs a few timeouts, not one per request.

Closed (normal) -> **open** after ``failures`` consecutive failed calls (timeouts, connection
errors, 5xx: what the engine falls back on; a client's own 4xx and a busy model do not count);
open models are left out of the candidates for ``cooldown_s``; then **half-open**: one request
may try the model again (a probe); its success closes the breaker, its failure opens it for
another cooldown. If every candidate's breaker is open, the candidates are kept anyway: trying a
possibly dead model beats refusing the request outright.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..config import DEFAULT_BREAKER_COOLDOWN_S, DEFAULT_BREAKER_FAILURES


@dataclass
class Breaker:
    failures: int = DEFAULT_BREAKER_FAILURES  # consecutive failures that open it; 0 = never
    cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S
    consecutive: int = 0
    opened_at: float | None = None
    probing: bool = False
    trips: int = field(default=0)  # times it opened (metrics)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.probing or time.monotonic() - self.opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def available(self) -> bool:
        """May the planner consider this model now? (Closed, or half-open with no probe running.)"""
        if self.opened_at is None:
            return True
        return not self.probing and time.monotonic() - self.opened_at >= self.cooldown_s

    def begin(self) -> None:
        """A call starts: if the breaker is not closed, this call is the probe."""
        if self.opened_at is not None:
            self.probing = True

    def retry_in(self) -> float:
        return 0.0 if self.opened_at is None else max(0.0, self.cooldown_s - (time.monotonic() - self.opened_at))

    def success(self) -> None:
        self.consecutive, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.consecutive += 1
        if self.probing or (self.failures and self.consecutive >= self.failures):
            if self.opened_at is None or self.probing:
                self.trips += 1
            self.opened_at, self.probing = time.monotonic(), False

    def released(self) -> None:
        """A probe that ended without a verdict (cancelled, client error) frees the probe place."""
        self.probing = False

    def as_dict(self) -> dict:
        return {"state": self.state, "consecutive_failures": self.consecutive,
                "retry_in_s": round(self.retry_in(), 3), "trips": self.trips}
