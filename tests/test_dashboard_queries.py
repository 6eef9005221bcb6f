"""The dashboard's SQL against plain Python over the same log, on SQLite and on PostgreSQL: the
overview equals ``summarize()`` (what ``tierwise stats --json`` prints), per key too; the what-if
re-decides like a per-request loop of the rule; quality, margins and the decisions table match."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tierwise.dashboard import decisions, quality, sql, whatif
from tierwise.dashboard.overview import overview
from tierwise.dashboard.sql import Reader, Scope
from tierwise.decision_log import DecisionLog, summarize
from tierwise.gateway.guard import key_hash
from tierwise.testing.dashboard import KEYS, fill_log
from tierwise.testing.traffic import DEMO_TIERS

PRICES = {t.name: (t.input_per_1m, t.output_per_1m) for t in DEMO_TIERS}
TIERS = [whatif.Tier(t.name, t.input_per_1m, t.output_per_1m) for t in DEMO_TIERS]
NOW = time.time()
ALL = Scope(NOW - 3 * 86400, NOW + 10)


def assert_same(mine, ref, path="stats"):
    """Equal, floats to 1e-9 (the database sums in another order)."""
    if isinstance(ref, dict):
        assert set(mine) == set(ref), f"{path}: keys {sorted(set(mine) ^ set(ref))} differ"
        for k in ref:
            assert_same(mine[k], ref[k], f"{path}.{k}")
    elif isinstance(ref, float) and not isinstance(mine, str):
        assert mine == pytest.approx(ref, rel=1e-9, abs=1e-12), path
    else:
        assert mine == ref, path


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def demo(request, tmp_path_factory):
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("dash") / "log.sqlite")
    else:
        url = request.getfixturevalue("new_postgres_db")("dash")
    log = fill_log(url, 600, start=NOW - 86400, end=NOW, seed=3)
    reader = Reader(log.url)
    yield log, reader
    reader.close()


def _rows(demo_log, key=None):
    log = DecisionLog(demo_log.url)
    try:
        rows = log.rows()
    finally:
        log.close()
    return [r for r in rows if key is None or r["key_hash"] == key]


@pytest.mark.parametrize("small", [True, False], ids=["by-time", "covering-indexes"])
def test_overview_equals_summarize_for_every_key_and_all(demo, small, monkeypatch):
    log, reader = demo
    monkeypatch.setattr(sql, "SMALL_RANGE", 10**9 if small else 0)
    with ThreadPoolExecutor(2) as pool:
        for key in (None, *(key_hash(k) for k in KEYS)):
            got = overview(reader, Scope(ALL.t0, ALL.t1, key), PRICES, pool=pool)
            ref = summarize(_rows(log, key), PRICES)
            assert ref["requests"] > 50 and ref["fallbacks"] and ref["saved_usd"]  # the mix has every kind of row
            assert_same(got["stats"], ref)


def test_overview_series_and_per_model_numbers_add_up(demo):
    log, reader = demo
    got = overview(reader, ALL, PRICES)
    stats = got["stats"]
    for name, counts in got["series"]["models"].items():
        assert sum(counts) == stats["models"][name]["requests"]
    assert sum(got["series"]["unanswered"]) == sum(1 for r in log.records if r.model is None)
    rows = [r for r in log.records if r.status == 200 and r.model == "mid-8b"]
    p99 = got["models"][[m["model"] for m in got["models"]].index("mid-8b")]["latency_ms_p99"]
    assert p99 == pytest.approx(float(np.percentile([r.latency_ms for r in rows], 99)), rel=1e-9)
    cascade = [r for r in log.records if r.cascade_chain]
    assert got["cascade"]["requests"] == len(cascade)
    assert got["cascade"]["escalated"] == sum(1 for r in cascade if len(r.cascade_chain) > 1)


def test_a_range_and_a_key_narrow_every_number(demo):
    log, reader = demo
    mid = NOW - 43200
    key = key_hash(KEYS[1])
    got = overview(reader, Scope(mid, NOW + 10, key), PRICES)["stats"]
    ref = summarize([r for r in _rows(log, key) if r["ts"] >= mid], PRICES)
    assert_same(got, ref)
    assert 0 < got["requests"] < len(log.records) / 3


def _redecide(rows, knob):
    """The cost_weight rule, one request at a time (independent of decision.choose)."""
    spend, quality_sum, n = 0.0, 0.0, 0
    names = [t.name for t in TIERS]
    for r in rows:
        costs = [(r.tokens_in * t.input_per_1m + r.tokens_out * t.output_per_1m) / 1e6 for t in TIERS]
        top = max(costs) or 1.0
        best = max((r.scores[m] - knob * c / top, -i, i) for i, (m, c) in enumerate(zip(names, costs)) if m in r.scores)
        spend += costs[best[2]]
        quality_sum += r.scores[names[best[2]]]
        n += 1
    return spend, quality_sum / n


def test_whatif_redecides_like_the_rule_one_request_at_a_time(demo):
    log, reader = demo
    got = whatif.whatif(reader, ALL, TIERS, "cost_weight", 0.4)
    routed = [r for r in log.records if r.status == 200 and r.scores and not r.cascade_chain
              and r.surface not in ("embeddings", "completions")]
    answered = [r for r in log.records if r.status == 200 and r.model]
    assert got["requests"]["redecided"] == len(routed)
    kept = math.fsum(r.cost_usd for r in answered) - math.fsum(r.cost_usd for r in routed)
    for i in (0, got["current_index"], len(got["knobs"]) - 1):
        p = got["points"][i]
        spend, mean_q = _redecide(routed, p["knob"])
        assert p["spend_usd"] == pytest.approx(kept + spend, rel=1e-9)
        assert p["quality"] == pytest.approx(mean_q, rel=1e-9)
        assert sum(p["mix"].values()) == pytest.approx(1.0)
    assert got["points"][got["current_index"]]["knob"] == 0.4
    assert got["points"][got["current_index"]]["yaml"] == "knob: 0.4"
    assert got["points"][got["current_index"]]["model"] == "tierwise:0.4"
    spends = [p["spend_usd"] for p in got["points"]]
    assert spends[0] > spends[-1]  # knob 0: best quality (dear); the largest knob: cheapest
    assert got["agreement"]["rate"] == 1.0  # the synthetic router used this very rule on these costs
    assert got["actual"]["spend_usd"] == pytest.approx(math.fsum(r.cost_usd for r in answered), rel=1e-9)


def test_quality_matches_the_latest_rating_per_request(demo):
    log, reader = demo
    got = quality.quality(reader, ALL, 3600, thin=0.05)
    by_id = {r.id: r for r in log.records}
    rated = {rid: score for rid, score in log.feedback}  # one rating per request here
    assert got["rated"] == len(rated)
    for m in got["models"]:
        scores = [s for rid, s in rated.items() if by_id[rid].model == m["model"]]
        assert m["rated"] == len(scores)
        assert m["mean_feedback"] == pytest.approx(sum(scores) / len(scores))
    assert sum(b["rated"] for b in got["calibration"]["bins"]) == len(rated)
    routed = [r for r in log.records if r.status == 200 and len(r.scores) >= 2 and not r.cascade_chain
              and r.surface not in ("embeddings", "completions")]
    margins = [sorted(r.scores.values())[-1] - sorted(r.scores.values())[-2] for r in routed]
    assert got["margins"]["requests"] == len(routed)
    assert got["margins"]["thin"] == sum(1 for m in margins if m < 0.05)
    assert sum(got["margins"]["histogram"]) == len(routed)


def test_a_client_key_sees_only_its_own_feedback(demo):
    log, reader = demo
    key = key_hash(KEYS[0])
    got = quality.quality(reader, Scope(ALL.t0, ALL.t1, key), 3600)
    mine = {r.id for r in log.records if r.key_hash == key}
    assert got["rated"] == sum(1 for rid, _ in log.feedback if rid in mine) < len(log.feedback)


def test_decisions_filter_page_and_detail(demo):
    log, reader = demo
    recs = sorted(log.records, key=lambda r: (-r.ts, r.id))
    first = decisions.page(reader, ALL, decisions.Filters(), 0, 25)
    assert [i["id"] for i in first["items"]] == [r.id for r in recs[:25]] and first["total"] == len(recs)
    second = decisions.page(reader, ALL, decisions.Filters(), 1, 25)
    assert [i["id"] for i in second["items"]] == [r.id for r in recs[25:50]]
    cases = {
        decisions.Filters(model="large-70b"): lambda r: r.model == "large-70b",
        decisions.Filters(status="error"): lambda r: r.status != 200,
        decisions.Filters(status="429"): lambda r: r.status == 429,
        decisions.Filters(fallbacks=True): lambda r: bool(r.fallbacks),
        decisions.Filters(cascade=True, status="ok"): lambda r: bool(r.cascade_chain) and r.status == 200,
        decisions.Filters(surface="messages"): lambda r: r.surface == "messages",
        decisions.Filters(key=key_hash(KEYS[2]), model="mid-8b"): lambda r: r.key_hash == key_hash(KEYS[2])
        and r.model == "mid-8b",
        decisions.Filters(search=recs[7].id[:-1]): lambda r: r.id.startswith(recs[7].id[:-1]),
    }
    for filters, keep in cases.items():
        got = decisions.page(reader, ALL, filters, 0, 200)
        want = [r.id for r in recs if keep(r)]
        assert got["total"] == len(want) > 0, filters
        assert [i["id"] for i in got["items"]] == want[:200], filters
    r = next(r for r in recs if r.fallbacks and r.key_hash == key_hash(KEYS[0]))
    full = decisions.detail(reader, r.id, key_hash(KEYS[0]))
    assert full["fallbacks"][0]["model"] == r.fallbacks[0]["model"] and full["scores"] == r.scores
    assert full["prompt"] == r.prompt  # stored: the demo log keeps prompts
    assert decisions.detail(reader, r.id, key_hash(KEYS[1])) is None  # another key's request does not exist
    assert decisions.detail(reader, r.id, None)["id"] == r.id  # an admin sees it


@pytest.fixture(params=["sqlite", "postgres"])
def empty_log_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "log.sqlite")
    return request.getfixturevalue("new_postgres_db")("dash")


def _failed_spend_log(url):
    """Answered requests, and requests that paid for model calls but got no answer: a cascade whose
    top model failed after the lower ones were paid ($0.0016), a stream cut mid-answer (499)."""
    from tierwise.engine.record import CascadeStep, RequestRecord

    log = DecisionLog(url)
    t = NOW - 600
    for i in range(4):
        log.record(RequestRecord(id=f"ok-{i}", ts=t + i, status=200, model="small-1b", chosen="small-1b",
                                 scores={"small-1b": 0.7, "large-70b": 0.9}, tokens_in=400, tokens_out=50,
                                 cost_usd=(400 * 0.05 + 50 * 0.1) / 1e6, latency_ms=100.0, route_ms=0.2))
    cascade = RequestRecord(id="casc-failed", ts=t + 10, status=502, requested_model="tierwise:cascade",
                            error="all models failed", latency_ms=900.0)
    cascade.set_cascade([CascadeStep("small-1b", 0.2, "escalated", 1000, 100, 0.0001),
                         CascadeStep("mid-8b", 0.3, "escalated", 1000, 2000, 0.0015),
                         CascadeStep("large-70b", None, "error")])
    cascade.tokens_in, cascade.tokens_out, cascade.cost_usd = 2000, 2100, 0.0016
    log.record(cascade)
    log.record(RequestRecord(id="cut", ts=t + 11, status=499, model="mid-8b", tokens_in=100, tokens_out=40,
                             cost_usd=0.00005, latency_ms=300.0))
    log.record(RequestRecord(id="refused", ts=t + 12, status=429, error="rate limited"))
    log.flush()
    rows = log.rows()
    log.close()
    return rows


def test_spend_on_requests_without_an_answer_is_in_the_totals(empty_log_url):
    rows = _failed_spend_log(empty_log_url)
    reader = Reader(empty_log_url)
    try:
        got = overview(reader, ALL, PRICES)["stats"]
    finally:
        reader.close()
    ref = summarize(rows, PRICES)
    assert_same(got, ref)  # the dashboard's spend is `tierwise stats`'s
    assert got["unanswered_cost_usd"] == pytest.approx(0.0016 + 0.00005)
    answered = 4 * (400 * 0.05 + 50 * 0.1) / 1e6
    assert got["cost_usd"] == pytest.approx(answered + 0.0016 + 0.00005)
    base = 4 * (400 * 2.5 + 50 * 10.0) / 1e6  # the baseline: the answered routed requests only
    assert got["baseline_cost_usd"] == pytest.approx(base) and got["saved_usd"] == pytest.approx(base - answered)


def test_no_baseline_when_the_log_s_models_have_no_price_here(empty_log_url):
    rows = _failed_spend_log(empty_log_url)
    reader = Reader(empty_log_url)
    prices = {"smollm2": (0.01, 0.02), "qwen": (0.02, 0.04)}
    try:
        got = overview(reader, ALL, prices)
    finally:
        reader.close()
    assert_same(got["stats"], summarize(rows, prices))
    assert got["stats"]["unpriced_models"] == ["small-1b"] and got["stats"]["saved_usd"] is None
    assert got["best_single"]["model"] is None and got["best_single"]["saved_usd"] is None


@pytest.mark.parametrize("query, param", [
    ("overview?from=0&to=1e20", "to"), ("overview?from=-5&to=100", "from"), ("overview?from=0&to=inf", "from"),
    ("quality?from=1e300&to=1e301", "from"), ("decisions?status=99999999999999999999", "status"),
    ("decisions?status=%EF%BC%95%EF%BC%90%EF%BC%90", "status"), ("decisions?status=42", "status"),
    ("decisions?range=24h&page=nan", "page"), ("whatif?from=5&to=4", "from"),
])
def test_out_of_range_parameters_are_a_400_naming_them(tmp_path, query, param):
    from starlette.testclient import TestClient

    from tierwise.dashboard.context import Context
    from tierwise.dashboard.standalone import create_app

    _failed_spend_log(str(tmp_path / "log.sqlite"))
    app = create_app(str(tmp_path / "log.sqlite"), Context(TIERS))
    with TestClient(app, client=("127.0.0.1", 40000)) as c:
        r = c.get(f"/dashboard/api/{query}")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and err["code"] == "invalid_value" and "internal" not in err["message"]
        assert c.get("/dashboard/api/overview?from=0&to=253402300000").status_code == 200  # the widest range works
        assert c.get("/dashboard/api/decisions?range=7d&status=499").json()["total"] == 1
