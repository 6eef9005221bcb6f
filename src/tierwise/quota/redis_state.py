"""The quota counters in Redis: one Lua script per admission / settlement, so every worker and
replica sees one truth and no two can both take the last of a budget (``tierwise[redis]``)."""

from __future__ import annotations

import time
from typing import Any

from ..errors import ConfigError
from .policy import PICO, KeyPolicy
from .state import Buckets, Verdict

# KEYS: day, month, req_prev, req_cur, tok_prev, tok_cur
# ARGV: day_budget_pico|-1, month_budget_pico|-1, rpm|-1, tpm|-1, into_minute, reserve_pico, prompt_tokens
_ADMIT = """
local day = tonumber(redis.call('GET', KEYS[1]) or '0')
local month = tonumber(redis.call('GET', KEYS[2]) or '0')
local into = tonumber(ARGV[5])
local rq = tonumber(redis.call('GET', KEYS[3]) or '0') * (1 - into) + tonumber(redis.call('GET', KEYS[4]) or '0')
local tk = tonumber(redis.call('GET', KEYS[5]) or '0') * (1 - into) + tonumber(redis.call('GET', KEYS[6]) or '0')
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
return {reason, tostring(day), tostring(month), tostring(rq), tostring(tk)}
"""

# KEYS: day, month, tok_now; ARGV: delta_pico, tokens_out
_SETTLE = """
redis.call('INCRBY', KEYS[1], ARGV[1]); redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[2]); redis.call('EXPIRE', KEYS[3], 180)
return 1
"""


class RedisState:
    def __init__(self, url: str, prefix: str = "tierwise:"):
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigError("redis: a shared-state URL needs the redis client: pip install 'tierwise[redis]'") from None
        self.url, self.prefix = url, prefix
        self._r = aioredis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
        self._admit = self._r.register_script(_ADMIT)
        self._settle = self._r.register_script(_SETTLE)

    def _k(self, *parts: Any) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def admit(self, key: str, policy: KeyPolicy, b: Buckets, reserve_pico: int, prompt_tokens: int) -> Verdict:
        def lim(v: float | None, scale: float = 1) -> str:
            return "-1" if v is None else str(int(v * scale))

        keys = [self._k(key, "d", b.day), self._k(key, "m", b.month), self._k(key, "r", b.minute - 1),
                self._k(key, "r", b.minute), self._k(key, "t", b.minute - 1), self._k(key, "t", b.minute)]
        args = [lim(policy.usd_per_day, PICO), lim(policy.usd_per_month, PICO), lim(policy.requests_per_min),
                lim(policy.tokens_per_min), f"{b.into_minute:.6f}", str(int(reserve_pico)), str(int(prompt_tokens))]
        reason, day, month, rq, tk = await self._admit(keys=keys, args=args)
        return Verdict(not reason, reason, spent_day_pico=int(float(day)), spent_month_pico=int(float(month)),
                       requests_in_window=float(rq), tokens_in_window=float(tk))

    async def settle(self, key: str, b: Buckets, reserved_pico: int, actual_pico: int, tokens_out: int) -> None:
        keys = [self._k(key, "d", b.day), self._k(key, "m", b.month), self._k(key, "t", int(time.time() // 60))]
        await self._settle(keys=keys, args=[str(int(actual_pico - reserved_pico)), str(int(tokens_out))])

    async def spent(self, key: str, b: Buckets) -> tuple[int, int]:
        day, month = await self._r.mget(self._k(key, "d", b.day), self._k(key, "m", b.month))
        return int(day or 0), int(month or 0)

    async def ping(self) -> None:
        await self._r.ping()

    async def aclose(self) -> None:
        await self._r.aclose()
