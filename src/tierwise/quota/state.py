"""Where the counters live: in this process (one worker, no Redis) or in Redis (shared by every
worker and replica). Both run the same algorithm, atomically:

* admission: refuse if the key is over a budget (spend includes what in-flight requests reserved)
  or would exceed requests/min or tokens/min (a sliding window over two one-minute buckets);
  otherwise reserve the request's maximum cost and count the request and its prompt tokens;
* settlement: replace the reservation by the actual cost and add the completion tokens.

A key therefore never spends more than its budget plus what its in-flight requests could cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from .policy import KeyPolicy


@dataclass
class Verdict:
    ok: bool
    reason: str = ""  # which limit refused it: budget_day | budget_month | requests | tokens
    retry_after_s: float = 0.0
    spent_day_pico: int = 0
    spent_month_pico: int = 0
    requests_in_window: float = 0.0
    tokens_in_window: float = 0.0


@dataclass(frozen=True)
class Buckets:
    """The counter names a request touches, fixed at admission (settlement uses the same ones)."""

    day: str
    month: str
    minute: int
    into_minute: float

    @classmethod
    def at(cls, now: float) -> "Buckets":
        t = time.gmtime(now)
        return cls(time.strftime("%Y%m%d", t), time.strftime("%Y%m", t), int(now // 60), (now % 60) / 60)


class QuotaState(Protocol):
    async def admit(self, key: str, policy: KeyPolicy, b: Buckets, reserve_pico: int,
                    prompt_tokens: int) -> Verdict: ...

    async def settle(self, key: str, b: Buckets, reserved_pico: int, actual_pico: int, tokens_out: int) -> None: ...

    async def spent(self, key: str, b: Buckets) -> tuple[int, int]: ...

    async def aclose(self) -> None: ...


def _window(prev: float, cur: float, into: float) -> float:
    return prev * (1.0 - into) + cur


def retry_after(reason: str, b: Buckets, now: float) -> float:
    if reason in ("requests", "tokens"):
        return max(1.0, 60.0 * (1.0 - b.into_minute))
    if reason == "budget_day":
        return 86400.0 - now % 86400.0
    return 86400.0  # a month budget: try again tomorrow at the earliest


class MemoryState:
    """Counters in this process: exact for one worker (the embedded default)."""

    def __init__(self) -> None:
        self._v: dict[str, float] = {}

    def _get(self, k: str) -> float:
        return self._v.get(k, 0)

    def _add(self, k: str, n: float) -> None:
        self._v[k] = self._v.get(k, 0) + n

    async def admit(self, key: str, policy: KeyPolicy, b: Buckets, reserve_pico: int, prompt_tokens: int) -> Verdict:
        from .policy import PICO

        day, month = f"{key}:d:{b.day}", f"{key}:m:{b.month}"
        rq = _window(self._get(f"{key}:r:{b.minute - 1}"), self._get(f"{key}:r:{b.minute}"), b.into_minute)
        tk = _window(self._get(f"{key}:t:{b.minute - 1}"), self._get(f"{key}:t:{b.minute}"), b.into_minute)
        v = Verdict(True, spent_day_pico=int(self._get(day)), spent_month_pico=int(self._get(month)),
                    requests_in_window=rq, tokens_in_window=tk)
        if policy.usd_per_day is not None and v.spent_day_pico >= policy.usd_per_day * PICO:
            v.ok, v.reason = False, "budget_day"
        elif policy.usd_per_month is not None and v.spent_month_pico >= policy.usd_per_month * PICO:
            v.ok, v.reason = False, "budget_month"
        elif policy.requests_per_min is not None and rq + 1 > policy.requests_per_min:
            v.ok, v.reason = False, "requests"
        elif policy.tokens_per_min is not None and tk + prompt_tokens > policy.tokens_per_min:
            v.ok, v.reason = False, "tokens"
        if not v.ok:
            return v
        self._add(day, reserve_pico)
        self._add(month, reserve_pico)
        self._add(f"{key}:r:{b.minute}", 1)
        self._add(f"{key}:t:{b.minute}", prompt_tokens)
        self._drop_old(key, b.minute)
        return v

    def _drop_old(self, key: str, minute: int) -> None:
        for k in (f"{key}:r:{minute - 2}", f"{key}:t:{minute - 2}"):
            self._v.pop(k, None)

    async def settle(self, key: str, b: Buckets, reserved_pico: int, actual_pico: int, tokens_out: int) -> None:
        delta = actual_pico - reserved_pico
        self._add(f"{key}:d:{b.day}", delta)
        self._add(f"{key}:m:{b.month}", delta)
        self._add(f"{key}:t:{int(time.time() // 60)}", tokens_out)

    async def spent(self, key: str, b: Buckets) -> tuple[int, int]:
        return int(self._get(f"{key}:d:{b.day}")), int(self._get(f"{key}:m:{b.month}"))

    async def aclose(self) -> None:
        return None
