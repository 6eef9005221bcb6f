"""The quota counters in Redis: one Lua script per admission / settlement, so every worker and
replica sees one truth and no two can both take the last of a budget (``tierwise[redis]``).

When Redis cannot be reached, a limited key's request is refused with :class:`QuotaUnavailable`
(503 ``quota_unavailable``; the address and the driver's error go to stderr, once per outage, not
to the client) rather than admitted unchecked; ``ping`` is what ``/health`` asks."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Any, Awaitable

from ..errors import ConfigError
from .policy import PICO, KeyPolicy, QuotaUnavailable
from .state import Buckets, Verdict

# KEYS: day, month, req_prev, req_cur, tok_prev, tok_cur
# ARGV: day_budget_pico|-1, month_budget_pico|-1, rpm|-1, tpm|-1, into_minute, reserve_pico, prompt_tokens
_ADMIT = """
local day = tonumber(redis.call('GET', KEYS[1]) or '0')
local month = tonumber(redis.call('GET', KEYS[2]) or '0')
local into = tonumber(ARGV[5])
local rp = tonumber(redis.call('GET', KEYS[3]) or '0')
local rc = tonumber(redis.call('GET', KEYS[4]) or '0')
local tp = tonumber(redis.call('GET', KEYS[5]) or '0')
local tc = tonumber(redis.call('GET', KEYS[6]) or '0')
local rq = rp * (1 - into) + rc
local tk = tp * (1 - into) + tc
local reason = ''
if tonumber(ARGV[1]) >= 0 and day >= tonumber(ARGV[1]) then reason = 'budget_day'
elseif tonumber(ARGV[2]) >= 0 and month >= tonumber(ARGV[2]) then reason = 'budget_month'
elseif tonumber(ARGV[3]) >= 0 and rq + 1 > tonumber(ARGV[3]) then reason = 'requests'
elseif tonumber(ARGV[4]) >= 0 and tk + tonumber(ARGV[7]) > tonumber(ARGV[4]) then reason = 'tokens'
end
if reason == '' then
  redis.call('INCRBY', KEYS[1], ARGV[6]); redis.call('EXPIRE', KEYS[1], 172800)
  redis.call('INCRBY', KEYS[2], ARGV[6]); redis.call('EXPIRE', KEYS[2], 3456000)
  redis.call('INCR', KEYS[4]); redis.call('EXPIRE', KEYS[4], 180)
  redis.call('INCRBY', KEYS[6], ARGV[7]); redis.call('EXPIRE', KEYS[6], 180)
end
return {reason, tostring(day), tostring(month), tostring(rp), tostring(rc), tostring(tp), tostring(tc)}
"""

# KEYS: day, month, tok_now, tok_admitted; ARGV: delta_pico, tokens_out, prompt_delta
# (the prompt's actual tokens replace its estimate in the minute it was counted, while that bucket lives)
_SETTLE = """
redis.call('INCRBY', KEYS[1], ARGV[1]); redis.call('INCRBY', KEYS[2], ARGV[1])
if tonumber(ARGV[3]) ~= 0 and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], ARGV[3]) end
if tonumber(ARGV[2]) ~= 0 then redis.call('INCRBY', KEYS[3], ARGV[2]); redis.call('EXPIRE', KEYS[3], 180) end
return 1
"""


def _lim(v: float | None, scale: float = 1) -> str:
    """A limit as the script reads it: -1 for none (an infinite one is none too)."""
    return "-1" if v is None or not math.isfinite(v) else str(int(v * scale))


class RedisState:
    shared = True  # every worker and replica reads the same counters

    def __init__(self, url: str, prefix: str = "tierwise:"):
        try:
            import redis.asyncio as aioredis
            from redis.exceptions import RedisError
        except ImportError:
            raise ConfigError("redis: a shared-state URL needs the redis client: pip install 'tierwise[redis]'") from None
        self.url, self.prefix = url, prefix
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self._down = False  # said on stderr once per outage
        self._r = aioredis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
        self._admit = self._r.register_script(_ADMIT)
        self._settle = self._r.register_script(_SETTLE)

    def _k(self, *parts: Any) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def _call(self, op: Awaitable[Any]) -> Any:
        """``op``, with an unreachable Redis turned into a 503 for the client (details on stderr)."""
        try:
            out = await op
        except self._errors as exc:
            if not self._down:
                self._down = True
                print(f"tierwise: quota store {self.url} unreachable ({type(exc).__name__}: {exc}); requests of "
                      "limited keys get 503 quota_unavailable until it is back", file=sys.stderr, flush=True)
            raise QuotaUnavailable("per-key budgets and rate limits cannot be checked: the quota store is "
                                   "unreachable; retry shortly (the gateway's log says why)",
                                   headers={"retry-after": "5"}) from None
        if self._down:
            self._down = False
            print("tierwise: quota store reachable again", file=sys.stderr, flush=True)
        return out

    async def admit(self, key: str, policy: KeyPolicy, b: Buckets, reserve_pico: int, prompt_tokens: int) -> Verdict:
        keys = [self._k(key, "d", b.day), self._k(key, "m", b.month), self._k(key, "r", b.minute - 1),
                self._k(key, "r", b.minute), self._k(key, "t", b.minute - 1), self._k(key, "t", b.minute)]
        args = [_lim(policy.usd_per_day, PICO), _lim(policy.usd_per_month, PICO), _lim(policy.requests_per_min),
                _lim(policy.tokens_per_min), f"{b.into_minute:.6f}", str(int(reserve_pico)), str(int(prompt_tokens))]
        reason, day, month, rp, rc, tp, tc = await self._call(self._admit(keys=keys, args=args))
        into = float(f"{b.into_minute:.6f}")
        rp, rc, tp, tc = float(rp), float(rc), float(tp), float(tc)
        return Verdict(not reason, reason, spent_day_pico=int(float(day)), spent_month_pico=int(float(month)),
                       requests_in_window=rp * (1 - into) + rc, tokens_in_window=tp * (1 - into) + tc,
                       requests_prev=rp, requests_cur=rc, tokens_prev=tp, tokens_cur=tc)

    async def settle(self, key: str, b: Buckets, reserved_pico: int, actual_pico: int, tokens_out: int,
                     prompt_delta: int = 0) -> None:
        keys = [self._k(key, "d", b.day), self._k(key, "m", b.month), self._k(key, "t", int(time.time() // 60)),
                self._k(key, "t", b.minute)]
        await self._call(self._settle(keys=keys, args=[str(int(actual_pico - reserved_pico)), str(int(tokens_out)),
                                                       str(int(prompt_delta))]))

    async def spent(self, key: str, b: Buckets) -> tuple[int, int]:
        day, month = await self._call(self._r.mget(self._k(key, "d", b.day), self._k(key, "m", b.month)))
        return int(day or 0), int(month or 0)

    async def ping(self) -> None:
        await self._call(self._r.ping())

    async def aclose(self) -> None:
        await self._r.aclose()
