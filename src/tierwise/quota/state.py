"""Where the counters live: in this process (one worker, no Redis) or in Redis (shared by every
worker and replica). Both run the same algorithm, atomically:

* admission: refuse if the key is over a budget (spend includes what in-flight requests reserved)
  or would exceed requests/min or tokens/min (a sliding window over two one-minute buckets);
  otherwise reserve the request's maximum cost and count the request and its prompt tokens;
* settlement: replace the reservation by the actual cost, the prompt-token estimate by the prompt's
  actual tokens (in the minute it was counted), and add the completion tokens.

Only the buckets the window reads are kept: the current and previous minute, day and month.

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
    # the two one-minute buckets behind each window (before this request), for the wait until it admits
    requests_prev: float = 0.0
    requests_cur: float = 0.0
    tokens_prev: float = 0.0
    tokens_cur: float = 0.0


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

    async def settle(self, key: str, b: Buckets, reserved_pico: int, actual_pico: int, tokens_out: int,
                     prompt_delta: int = 0) -> None: ...

    async def spent(self, key: str, b: Buckets) -> tuple[int, int]: ...

    async def aclose(self) -> None: ...


def _window(prev: float, cur: float, into: float) -> float:
    return prev * (1.0 - into) + cur


def window_wait(prev: float, cur: float, into: float, limit: float, need: float) -> float | None:
    """Seconds until the sliding window ``prev * (1 - into) + cur`` has room for ``need`` more under
    ``limit``, if nothing else is counted meanwhile: 0 when it has room now, None when it never will
    (``need`` alone is over the limit).

    Within this minute the previous bucket's weight falls linearly to 0; from the next minute on this
    minute's bucket is the previous one and falls in turn (the window is empty two minutes on)."""
    room = limit - need
    if room < 0:
        return None
    if _window(prev, cur, into) <= room:
        return 0.0
    if cur <= room:  # this minute: prev * (1 - f) + cur <= room, prev > 0 here
        return max(0.0, (1.0 - (room - cur) / prev - into) * 60.0)
    return (1.0 - into) * 60.0 + (1.0 - room / cur) * 60.0  # the next minute: cur * (1 - g) <= room


def retry_after(v: Verdict, policy: KeyPolicy, b: Buckets, now: float, prompt_tokens: int = 0) -> float:
    """Seconds until the limit that refused ``v`` admits the same request (at least 1): the sliding
    window's own answer for requests and tokens, the next UTC day for a daily budget."""
    wait: float | None = None
    if v.reason == "requests" and policy.requests_per_min is not None:
        wait = window_wait(v.requests_prev, v.requests_cur, b.into_minute, policy.requests_per_min, 1)
    elif v.reason == "tokens" and policy.tokens_per_min is not None:
        wait = window_wait(v.tokens_prev, v.tokens_cur, b.into_minute, policy.tokens_per_min, prompt_tokens)
    elif v.reason == "budget_day":
        wait = 86400.0 - now % 86400.0
    if wait is None:
        wait = 86400.0  # a month budget: try again tomorrow at the earliest
    return max(1.0, wait)


class MemoryState:
    """Counters in this process: exact for one worker (the embedded default)."""

    shared = False  # every worker has its own

    def __init__(self) -> None:
        self._spend: dict[tuple[str, str], dict[str, float]] = {}  # (key, "d" | "m") -> day/month -> pico
        self._min: dict[tuple[str, str], dict[int, float]] = {}  # (key, "r" | "t") -> minute -> count

    def __len__(self) -> int:
        """How many counters are held (what the window and budgets still read)."""
        return sum(len(v) for v in self._spend.values()) + sum(len(v) for v in self._min.values())

    def _minutes(self, key: str, kind: str, b: Buckets) -> tuple[float, float]:
        m = self._min.get((key, kind), {})
        return m.get(b.minute - 1, 0.0), m.get(b.minute, 0.0)

    def _add_minute(self, key: str, kind: str, minute: int, n: float, *, only_if_kept: bool = False) -> None:
        m = self._min.setdefault((key, kind), {})
        if only_if_kept and minute not in m:
            return  # a bucket the window no longer reads
        m[minute] = m.get(minute, 0.0) + n

    def _add_spend(self, key: str, kind: str, period: str, n: float, *, only_if_kept: bool = False) -> None:
        s = self._spend.setdefault((key, kind), {})
        if only_if_kept and period not in s:
            return
        s[period] = s.get(period, 0.0) + n

    async def admit(self, key: str, policy: KeyPolicy, b: Buckets, reserve_pico: int, prompt_tokens: int) -> Verdict:
        from .policy import PICO

        self._drop_old(key, b)
        rp, rc = self._minutes(key, "r", b)
        tp, tc = self._minutes(key, "t", b)
        rq, tk = _window(rp, rc, b.into_minute), _window(tp, tc, b.into_minute)
        day, month = await self.spent(key, b)
        v = Verdict(True, spent_day_pico=day, spent_month_pico=month, requests_in_window=rq, tokens_in_window=tk,
                    requests_prev=rp, requests_cur=rc, tokens_prev=tp, tokens_cur=tc)
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
        self._add_spend(key, "d", b.day, reserve_pico)
        self._add_spend(key, "m", b.month, reserve_pico)
        self._add_minute(key, "r", b.minute, 1)
        self._add_minute(key, "t", b.minute, prompt_tokens)
        return v

    def _drop_old(self, key: str, b: Buckets) -> None:
        """Forget the key's buckets the window and budgets no longer read: minutes before the previous
        one; days and months but the current and the one before (an in-flight request settles there)."""
        for kind in ("r", "t"):
            m = self._min.get((key, kind))
            if m is None:
                continue
            for minute in [x for x in m if x < b.minute - 1]:
                del m[minute]
            if not m:
                del self._min[(key, kind)]
        for kind, now in (("d", b.day), ("m", b.month)):
            s = self._spend.get((key, kind))
            if s is None or len(s) <= 2:
                continue
            for period in sorted(p for p in s if p < now)[:-1]:
                del s[period]

    async def settle(self, key: str, b: Buckets, reserved_pico: int, actual_pico: int, tokens_out: int,
                     prompt_delta: int = 0) -> None:
        delta = actual_pico - reserved_pico
        self._add_spend(key, "d", b.day, delta, only_if_kept=True)
        self._add_spend(key, "m", b.month, delta, only_if_kept=True)
        if prompt_delta:  # the prompt's actual tokens, in the minute its estimate was counted
            self._add_minute(key, "t", b.minute, prompt_delta, only_if_kept=True)
        now = Buckets.at(time.time())
        if tokens_out:
            self._add_minute(key, "t", now.minute, tokens_out)
        self._drop_old(key, now)

    async def spent(self, key: str, b: Buckets) -> tuple[int, int]:
        return (int(self._spend.get((key, "d"), {}).get(b.day, 0)),
                int(self._spend.get((key, "m"), {}).get(b.month, 0)))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
