"""Budgets and rate limits per key, in this process and in a real Redis shared by many clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from tierwise.quota import KeyPolicy, MemoryState, Quota, RateLimited, cheaper_knob
from tierwise.quota.policy import PICO
from tierwise.quota.state import Buckets


@pytest.fixture(params=["memory", "redis"])
def make_state(request):
    if request.param == "memory":
        return MemoryState
    url = request.getfixturevalue("redis_url")
    from tierwise.quota.redis_state import RedisState

    return lambda: RedisState(url, prefix=f"t{time.monotonic_ns()}:")


def test_budget_holds_under_concurrency_within_one_reservation(make_state):
    """64 concurrent requests of at most $0.01 each against a $0.10 budget: spend <= budget + one max."""
    async def go():
        q = Quota({"k": KeyPolicy("team", usd_per_day=0.10)}, make_state())
        ok = refused = 0

        async def one():
            nonlocal ok, refused
            try:
                t = await q.admit("k", 0.01, 10)
            except RateLimited as exc:
                assert exc.status == 429 and exc.code == "insufficient_quota" and "retry-after" in exc.headers
                refused += 1
                return
            await asyncio.sleep(0.01)
            await q.settle(t, 0.004, 5)  # the actual cost is below the reserved maximum
            ok += 1

        for _ in range(4):
            await asyncio.gather(*(one() for _ in range(16)))
        day, _ = await q.state.spent("k", Buckets.at(time.time()))
        await q.aclose()
        return ok, refused, day / PICO

    ok, refused, spent = asyncio.run(go())
    assert refused > 0 and ok + refused == 64
    assert spent <= 0.10 + 0.01 + 1e-12
    assert spent == pytest.approx(ok * 0.004)


def test_requests_per_minute_and_headers(make_state):
    async def go():
        q = Quota({"k": KeyPolicy(requests_per_min=3, tokens_per_min=1000)}, make_state())
        tickets = [await q.admit("k", 0.0, 10) for _ in range(3)]
        with pytest.raises(RateLimited) as info:
            await q.admit("k", 0.0, 10)
        assert await q.admit("other", 0.0, 10) is None  # keys without a policy are not limited
        await q.aclose()
        return tickets, info.value

    tickets, err = asyncio.run(go())
    assert tickets[0].headers()["x-ratelimit-limit-requests"] == "3"
    assert tickets[0].headers()["x-ratelimit-remaining-requests"] == "2"
    assert err.code == "rate_limit_exceeded" and int(err.headers["retry-after"]) >= 1
    assert "requests per minute" in err.message


def test_tokens_per_minute(make_state):
    async def go():
        q = Quota({"k": KeyPolicy(tokens_per_min=100)}, make_state())
        t = await q.admit("k", 0.0, 60)
        await q.settle(t, 0.0, 30)  # 90 tokens this minute
        with pytest.raises(RateLimited, match="tokens per minute"):
            await q.admit("k", 0.0, 20)
        await q.aclose()

    asyncio.run(go())


def test_budget_use_drives_a_cheaper_knob(make_state):
    async def go():
        q = Quota({"k": KeyPolicy(usd_per_day=1.0)}, make_state())
        t = await q.admit("k", 0.9, 0)
        used = await q.used("k")
        await q.settle(t, 0.85, 0)
        after = await q.used("k")
        await q.aclose()
        return used, after

    used, after = asyncio.run(go())
    assert used == pytest.approx(0.9) and after == pytest.approx(0.85)
    assert cheaper_knob("threshold", 0.7, 0.5, 0.8) == 0.7
    assert cheaper_knob("threshold", 0.7, 0.9, 0.8) == pytest.approx(0.35)
    assert cheaper_knob("threshold", 0.7, 1.2, 0.8) == 0.0
    assert cheaper_knob("cost_weight", 0.2, 1.0, 0.8) >= 100
    assert cheaper_knob("cost_weight", 0.2, 0.95, None) == 0.2


def _fresh(*argv: str) -> subprocess.CompletedProcess:
    """``argv`` run by a new interpreter, so the import order is the command's own, not this session's."""
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)


def test_keystore_imports_first_in_a_fresh_interpreter():
    """``tierwise.keystore`` imported before the gateway (as ``tierwise keys`` does) was a circular import."""
    r = _fresh("-c", "import tierwise.keystore as k, tierwise.gateway.guard as g; "
                     "assert g.key_hash is k.key_hash; print(k.key_hash('sk-x'))")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) == 24


def test_keys_commands_run_from_the_cli(tmp_path):
    db = str(tmp_path / "keys.sqlite")
    empty = _fresh("-m", "tierwise.cli", "keys", "list", "--log", db)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == "" and "Traceback" not in empty.stderr
    added = _fresh("-m", "tierwise.cli", "keys", "add", "team-a", "--usd-per-day", "2", "--log", db)
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("sk-tw-")
    listed = _fresh("-m", "tierwise.cli", "keys", "list", "--json", "--log", db)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    from tierwise.keystore import key_hash

    assert row["name"] == "team-a" and row["usd_per_day"] == 2.0 and row["key_hash"] == key_hash(secret)
