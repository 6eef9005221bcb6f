"""The gateway's client keys: the config's (``api_keys``, ``admin_keys``, ``keys:`` with limits) and
the database's (``tierwise keys``), turned into the guard's accepted hashes and the quota's
per-key policies; database keys are re-read every ``REFRESH_S`` seconds, so a key added or revoked
on any machine holds on every worker and replica within that time. A limited key that this gateway
cannot keep exact (several workers, no ``redis:``) is refused by the quota, whenever it appears
(see :class:`tierwise.quota.Quota`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Any

from ..keystore import KeyStore
from ..quota import KeyPolicy, MemoryState, Quota
from .guard import Guard, key_hash


def _refresh_s() -> float:
    try:  # tests shorten it
        return max(0.1, float(os.environ.get("TIERWISE_KEYS_REFRESH_S") or 10.0))
    except ValueError:
        return 10.0


REFRESH_S = _refresh_s()


def _policy(k: Any) -> KeyPolicy:
    return KeyPolicy(k.name, k.usd_per_day, k.usd_per_month, k.requests_per_min, k.tokens_per_min, k.degrade_from)


class Keys:
    def __init__(self, pyramid: Any, log_target: str):
        cfg = list(pyramid.keys)
        self.guard = Guard([*(pyramid.client_keys() or ()), *(k.secret() for k in cfg if not k.admin)],
                           pyramid.max_body_bytes,
                           admin_keys=[*(pyramid.admin_client_keys() or ()), *(k.secret() for k in cfg if k.admin)],
                           body_timeout_s=pyramid.body_timeout_s)
        self._config_policies = {key_hash(k.secret()): _policy(k) for k in cfg}
        state: Any = MemoryState()
        if pyramid.redis:
            from ..quota.redis_state import RedisState

            state = RedisState(pyramid.redis)
        self.quota = Quota(dict(self._config_policies), state)
        self.store = None if log_target == "off" else KeyStore(log_target)  # `log: off`: config keys only
        self.refresh()

    def refresh(self) -> None:
        """Re-read the database's live keys (blocking: call it from a thread when serving)."""
        stored = self.store.list(live_only=True) if self.store is not None else []
        self.guard.set_stored([k.key_hash for k in stored if not k.admin], [k.key_hash for k in stored if k.admin])
        self.quota.policies = {**{k.key_hash: k.policy for k in stored if k.policy.limited},
                               **{h: p for h, p in self._config_policies.items() if p.limited}}

    @property
    def limited(self) -> bool:
        return bool(self.quota.policies) or (self.store is not None and bool(self.store.list(live_only=True)))

    async def keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # keep the keys we have; say why they may be stale
                print(f"tierwise: could not re-read client keys from {self.store.url}: {exc}", file=sys.stderr)

    @contextlib.asynccontextmanager
    async def running(self):
        task = asyncio.ensure_future(self.keep_fresh())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await self.quota.aclose()
