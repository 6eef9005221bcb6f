"""Several replicas x several workers, one truth: budgets, limits and the log hold across all of them.

Two ``tierwise serve --workers 2`` processes share one PostgreSQL decision log and one Redis (both
real, started for the test) in front of the stub backend. 64 concurrent clients spend one key's
daily budget through both replicas.
"""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest

from tierwise.testing import Gateway

KEY = "sk-team-budget-0001"
OTHER = "sk-team-other-0002"
BUDGET = 0.02  # USD per day
MSG = [{"role": "user", "content": "spend a little of the budget"}]


def _pyramid(tmp, stub, postgres_url, redis_url, limits: str):
    lines = ["models:"]
    for i, price in enumerate((10.0, 100.0)):  # USD per 1M tokens: each request costs a few 1e-4 USD
        lines += [f"  - name: m{i}", "    backend: openai", f"    endpoint: {stub.url}", f"    model: echo@r{i}",
                  f"    input_per_1m: {price}", f"    output_per_1m: {price}", "    context_window: 4096",
                  "    timeout_s: 10", "    max_concurrency: 64"]
    lines += [f"log: {postgres_url}", f"redis: {redis_url}", "keys:",
              f"  - {{name: team, key: {KEY}, {limits}}}", f"  - {{name: other, key: {OTHER}}}"]
    cfg = tmp / "pyramid.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@pytest.fixture()
def replicas(tmp_path, stub, postgres_url, redis_url, request):
    limits = getattr(request, "param", f"usd_per_day: {BUDGET}, degrade_from: null")
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as con:  # a clean log for this test
        for table in ("requests", "feedback", "api_keys"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    cfg = _pyramid(tmp_path, stub, postgres_url, redis_url, limits)
    gws = [Gateway.start(cfg, "--workers", "2", log=tmp_path / "unused") for _ in range(2)]
    yield gws, postgres_url
    for g in gws:
        g.stop()


HARD = [{"role": "user", "content": "Prove that the sum of the first n odd numbers is n squared, step by step, "
                                     "then compute 37*91+12*7."}]  # the stand-in router rates m1 above m0 here


def _spend(gws, n: int, key: str, model: str = "m1", clients: int = 64, msgs=MSG) -> list[httpx.Response]:
    def one(i: int) -> httpx.Response:
        g = gws[i % len(gws)]
        return httpx.post(g.url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {key}"},
                          json={"model": model, "messages": msgs, "max_tokens": 16})

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(n)))


def _rows(url: str, want: int = 0, timeout: float = 10.0) -> list[tuple]:
    """The log's rows, waiting up to ``timeout`` for ``want`` of them (each writer batches)."""
    import time

    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as con:
            rows = con.execute("SELECT status, cost_usd, key_hash, model, budget_used FROM requests").fetchall()
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_a_budget_holds_across_replicas_and_workers(replicas):
    gws, url = replicas
    got = _spend(gws, 400, KEY)
    ok = [r for r in got if r.status_code == 200]
    refused = [r for r in got if r.status_code != 200]
    assert ok and refused, "the budget should admit some requests and refuse the rest"
    assert {r.status_code for r in refused} == {429}
    err = refused[0].json()["error"]
    assert err["code"] == "insufficient_quota" and "daily budget" in err["message"]
    assert int(refused[0].headers["retry-after"]) > 0
    # the most one request can cost: m1's price x (prompt bytes upper bound + max_tokens)
    one_max = 100.0 * (len(MSG[0]["content"]) + 16 + 16 + 16) / 1e6
    rows = _rows(url, want=len(got))
    spent = sum(c for s, c, *_ in rows if s == 200)
    assert spent <= BUDGET + one_max + 1e-12, (spent, BUDGET, one_max)
    assert spent >= BUDGET * 0.5  # it was really spent, not refused from the start
    # one row per request, on whichever replica and worker answered it
    assert sum(1 for s, *_ in rows if s == 200) == len(ok) and sum(1 for s, *_ in rows if s == 429) == len(refused)
    # another key is not held up by the first one's budget
    assert all(r.status_code == 200 for r in _spend(gws, 8, OTHER, clients=8))


@pytest.mark.parametrize("replicas", [f"usd_per_day: {BUDGET}, degrade_from: 0.5"], indirect=True)
def test_near_its_budget_a_key_is_routed_cheaper(replicas):
    gws, url = replicas
    got = _spend(gws, 300, KEY, model="tierwise:1", clients=4, msgs=HARD)  # knob 1: the best model while budget lasts
    statuses = [r.status_code for r in got]
    assert 200 in statuses
    rows = [r for r in _rows(url, want=len(got)) if r[0] == 200]
    early = [m for s, c, k, m, used in rows if used is not None and used < 0.5]
    late = [m for s, c, k, m, used in rows if used is not None and used >= 0.9]
    assert early and set(early) == {"m1"} and late and set(late) == {"m0"}, (set(early), set(late))
    used = [json.loads(r.headers.get("x-tierwise-budget-used", "0")) for r in got if r.status_code == 200]
    assert max(used) >= 0.9
