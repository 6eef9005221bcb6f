"""Decision log: batching writer, durability, feedback, concurrency, stats arithmetic."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tierwise.decision_log import DecisionLog, LogError, RequestRecord, prompt_hash, summarize


def _rec(i: int, model: str = "small", **kw) -> RequestRecord:
    base = dict(id=f"req-{i}", ts=time.time() + i * 1e-6, prompt_hash=prompt_hash(f"prompt {i}"), status=200,
                requested_model="tierwise", router="test", rule="threshold", knob=0.5,
                scores={"small": 0.8, "big": 0.9}, chosen=model, model=model, tokens_in=100 + i,
                tokens_out=20 + i, latency_ms=10.0 + i, route_ms=0.1, cost_usd=0.0, prompt=f"prompt {i}")
    base.update(kw)
    return RequestRecord(**base)


def _record_from_threads(log: DecisionLog, threads: int, per_thread: int) -> None:
    """``threads`` threads record ``per_thread`` rows each at once (ids ``req-{t * 1000 + j}``)."""

    def worker(t: int) -> None:
        for j in range(per_thread):
            log.record(_rec(t * 1000 + j))

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in workers:
        th.start()
    for th in workers:
        th.join()


def test_rows_roundtrip_and_last(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite")
    for i in range(5):
        log.record(_rec(i, fallbacks=[{"model": "x", "reason": "timeout", "error": "slow"}] if i == 2 else []))
    log.close()
    rows = DecisionLog(tmp_path / "log.sqlite").rows()
    assert [r["id"] for r in rows] == [f"req-{i}" for i in range(5)]
    assert rows[2]["fallbacks"][0]["reason"] == "timeout"
    assert rows[0]["scores"] == {"small": 0.8, "big": 0.9}
    assert rows[0]["prompt"] is None  # prompts are not stored unless asked
    last = DecisionLog(tmp_path / "log.sqlite").rows(last=2)
    assert [r["id"] for r in last] == ["req-3", "req-4"]


def test_wal_mode_and_durable_across_reopen(tmp_path):
    path = tmp_path / "log.sqlite"
    log = DecisionLog(path)
    log.record(_rec(1))
    log.close()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    log2 = DecisionLog(path)  # "restart": schema creation must not wipe rows
    log2.record(_rec(2))
    log2.close()
    assert DecisionLog(path).count() == 2


def test_record_does_not_block(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite")
    recs = [_rec(i) for i in range(2000)]
    t = time.perf_counter()
    for r in recs:
        log.record(r)
    enqueue_s = time.perf_counter() - t
    log.flush()
    assert log.count() == 2000
    # queueing is a put on a SimpleQueue: far below a millisecond per row
    assert enqueue_s / 2000 < 5e-4, enqueue_s
    log.close()


def test_no_lost_rows_with_32_threads(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", batch=16)
    _record_from_threads(log, 32, per_thread=50)
    log.close()
    assert DecisionLog(tmp_path / "log.sqlite").count() == 32 * 50


def test_feedback_found_unknown_and_bad_score(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", store_prompts=True)
    log.record(_rec(7))
    # FIFO: feedback sent right after the request (row still queued) must find it
    assert log.add_feedback("req-7", 0.25).result(10) is True
    assert log.add_feedback("req-7", 1.0).result(10) is True
    assert log.add_feedback("nope", 0.5).result(10) is False
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log.add_feedback("req-7", 1.5)
    log.close()
    fb = DecisionLog(tmp_path / "log.sqlite").feedback_rows()
    assert len(fb) == 1
    assert fb[0]["request_id"] == "req-7" and fb[0]["score"] == 1.0  # latest rating wins
    assert fb[0]["prompt"] == "prompt 7" and fb[0]["model"] == "small"


def test_bad_path_fails_fast(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LogError, match="cannot open"):
        DecisionLog(blocker / "sub" / "log.sqlite")


def test_postgres_without_psycopg_or_server_is_one_line_error():
    with pytest.raises(LogError, match="postgres|psycopg|connect"):
        DecisionLog("postgresql://tierwise@127.0.0.1:1/none")


def test_summarize_share_latency_and_savings():
    prices = {"small": (0.1, 0.2), "big": (10.0, 30.0)}
    rows = []
    for i in range(10):
        model = "big" if i < 3 else "small"
        pin, pout = prices[model]
        tin, tout = 1000 + 10 * i, 100 + i
        rows.append({"status": 200, "model": model, "tokens_in": tin, "tokens_out": tout,
                     "cost_usd": (tin * pin + tout * pout) / 1e6, "latency_ms": float(i + 1), "route_ms": 0.2,
                     "fallbacks": [{"model": "small"}] if i == 0 else []})
    rows.append({"status": 502, "model": None, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0,
                 "latency_ms": 999.0, "route_ms": 0.2, "fallbacks": [{"model": "small"}, {"model": "big"}]})
    s = summarize(rows, prices)
    assert s["requests"] == 11 and s["answered"] == 10
    assert s["models"]["small"]["share"] == pytest.approx(0.7)
    assert s["models"]["big"]["requests"] == 3
    assert s["fallback_requests"] == 2 and s["fallbacks"] == 3
    assert s["status"] == {"200": 10, "502": 1}
    assert s["latency_ms_p50"] == pytest.approx(5.5)  # 1..10 ms, failures excluded
    assert s["baseline_model"] == "big"
    ok = rows[:10]
    want_total = sum(r["cost_usd"] for r in ok)
    want_base = sum((r["tokens_in"] * 10.0 + r["tokens_out"] * 30.0) / 1e6 for r in ok)
    assert s["cost_usd"] == pytest.approx(want_total)
    assert s["baseline_cost_usd"] == pytest.approx(want_base)
    assert s["saved_usd"] == pytest.approx(want_base - want_total)
    assert 0 < s["saved_fraction"] < 1


def test_postgres_log_rows_feedback_and_concurrency(postgres_url):
    log = DecisionLog(postgres_url, store_prompts=True, batch=32)
    _record_from_threads(log, 32, per_thread=25)
    assert log.add_feedback("req-5", 0.5).result(10) is True
    assert log.add_feedback("missing", 0.5).result(10) is False
    log.close()
    again = DecisionLog(postgres_url)
    assert again.count() == 32 * 25
    assert again.rows(last=1)[0]["scores"] == {"small": 0.8, "big": 0.9}
    fb = again.feedback_rows()
    assert [(f["request_id"], f["score"], f["prompt"]) for f in fb] == [("req-5", 0.5, "prompt 5")]
    again.close()


# -- nothing lost silently ------------------------------------------------------------------------


def test_a_deleted_file_is_noticed_reported_and_recreated(tmp_path, capsys):
    path = tmp_path / "log.sqlite"
    log = DecisionLog(path)
    log.record(_rec(1))
    log.flush()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    for i in range(2, 6):
        log.record(_rec(i))
    log.flush()
    assert "deleted while running" in capsys.readouterr().err
    assert log.health()["reopened"] == 1 and log.health()["rows_written"] == 5
    log.close()
    assert [r["id"] for r in DecisionLog(path).rows()] == [f"req-{i}" for i in range(2, 6)]


def test_a_stalled_database_drops_rows_it_counts_once_the_queue_is_full(tmp_path, capsys):
    path = tmp_path / "log.sqlite"
    log = DecisionLog(path, max_queue=10)
    blocker = sqlite3.connect(path, timeout=30)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the database
    try:
        log.record(_rec(0))
        time.sleep(0.3)  # the writer is now waiting on the lock with that row
        for i in range(1, 41):
            log.record(_rec(i))
        h = log.health()
        assert h["rows_dropped"] == 30 and h["queued"] == 10 and h["status"] == "degraded"
        assert "queue full" in capsys.readouterr().err
    finally:
        blocker.rollback()
        blocker.close()
    log.flush()
    assert log.health()["rows_written"] == 11 and log.health()["rows_lost"] == 0
    log.close()


def test_a_batch_that_cannot_be_written_is_counted_as_lost(tmp_path, capsys, monkeypatch):
    log = DecisionLog(tmp_path / "log.sqlite")
    monkeypatch.setattr(log, "_write", lambda con, items: (_ for _ in ()).throw(sqlite3.DatabaseError("disk I/O")))
    log.record(_rec(1))
    log.record(_rec(2))
    with pytest.raises(LogError, match="write failed"):
        log.flush()
    h = log.health()
    assert h["rows_lost"] == 2 and h["status"] == "degraded" and "disk I/O" in h["error"]
    assert "LOST 2 row(s)" in capsys.readouterr().err


def test_verify_reports_a_damaged_file(tmp_path):
    path = tmp_path / "log.sqlite"
    log = DecisionLog(path)
    for i in range(200):
        log.record(_rec(i, prompt="x" * 500))
    log.close()
    assert DecisionLog(path).verify()["ok"]
    data = bytearray(path.read_bytes())
    for off in range(8192, min(len(data), 40960), 97):  # scribble over pages past the header
        data[off] = (data[off] + 113) % 256
    path.write_bytes(bytes(data))
    try:
        report = DecisionLog(path).verify()
    except LogError as exc:  # too damaged to even open: also a clear, one-line answer
        assert "log.sqlite" in str(exc)
        return
    assert not report["ok"] and report["problems"]


def test_log_verify_command(tmp_path):
    from typer.testing import CliRunner

    from tierwise.cli import app

    path = tmp_path / "log.sqlite"
    log = DecisionLog(path)
    log.record(_rec(1))
    log.close()
    res = CliRunner().invoke(app, ["log", "--verify", "--log", str(path)])
    assert res.exit_code == 0 and "ok; 1 requests" in res.output, res.output
    with sqlite3.connect(path) as con:
        con.execute("INSERT INTO feedback (request_id, ts, score) VALUES ('ghost', 0, 1)")
    res = CliRunner().invoke(app, ["log", "--verify", "--json", "--log", str(path)])
    assert res.exit_code == 1 and "rate requests that are not in the log" in res.output


def test_feedback_by_upstream_id_rates_the_keys_own_latest_request(tmp_path):
    """Upstream ids repeat across backends and restarts: the gateway's request id is matched first;
    an upstream id only among the rating key's own requests (an admin's: everyone's), the latest."""
    log = DecisionLog(tmp_path / "log.sqlite")
    t = time.time()
    log.record(_rec(1, key_hash="alice", upstream_id="chatcmpl-1", ts=t))
    log.record(_rec(2, key_hash="bob", upstream_id="chatcmpl-1", ts=t + 1))  # another backend's "chatcmpl-1"
    log.record(_rec(3, key_hash="alice", upstream_id="chatcmpl-1", ts=t + 2))  # alice's, after a restart
    log.record(_rec(4, key_hash="bob", upstream_id="chatcmpl-1", ts=t + 3))
    log.record(_rec(5, key_hash="alice", upstream_id="req-4", ts=t + 4))  # an upstream id equal to a request id
    log.flush()
    assert log.add_feedback("chatcmpl-1", 0.1, key_hash="alice", admin=False).result(10) is True
    assert log.add_feedback("chatcmpl-1", 0.2, key_hash="bob", admin=False).result(10) is True
    assert log.add_feedback("chatcmpl-1", 0.3, key_hash="carol", admin=False).result(10) is False
    assert log.add_feedback("chatcmpl-1", 0.4).result(10) is True  # an admin: the latest of anyone's
    assert log.add_feedback("req-4", 0.5).result(10) is True  # the gateway's id wins over an upstream id
    assert log.add_feedback("req-4", 0.6, key_hash="alice", admin=False).result(10) is True  # alice's req-5
    rated = sorted((r[0], r[1]) for r in sqlite3.connect(tmp_path / "log.sqlite").execute(
        "SELECT request_id, score FROM feedback"))
    log.close()
    assert rated == [("req-3", 0.1), ("req-4", 0.2), ("req-4", 0.4), ("req-4", 0.5), ("req-5", 0.6)]


def test_feedback_for_a_request_that_got_no_answer_is_refused(tmp_path):
    from tierwise.decision_log.log import NotAnswered

    log = DecisionLog(tmp_path / "log.sqlite")
    log.record(_rec(1, status=429, model=None, error="rate limited"))
    log.record(_rec(2, status=404, model=None, error="model_not_found"))
    log.record(_rec(3, status=502, model="big", upstream_id="chatcmpl-9", error="stalled"))
    log.flush()
    for rid in ("req-1", "req-2", "req-3", "chatcmpl-9"):
        with pytest.raises(NotAnswered) as err:
            log.add_feedback(rid, 0.5).result(10)
        assert err.value.status == 409 and err.value.param == "request_id" and "no answer" in err.value.message
    assert log.feedback_rows() == []
    log.close()


def _failed_cascade_rows():
    """Two answered requests and a cascade that paid for m0 and m1 before m2 failed (502)."""
    ok = [{"status": 200, "model": "m0", "tokens_in": 100, "tokens_out": 10, "cost_usd": 0.001, "latency_ms": 5.0,
           "route_ms": 0.1, "fallbacks": []} for _ in range(2)]
    failed = {"status": 502, "model": None, "tokens_in": 300, "tokens_out": 30, "cost_usd": 0.0016,
              "latency_ms": 50.0, "route_ms": 0.1, "fallbacks": [],
              "cascade_chain": [{"model": "m0", "outcome": "escalated", "tokens_in": 100, "tokens_out": 10,
                                 "cost_usd": 0.0004}, {"model": "m1", "outcome": "escalated", "tokens_in": 200,
                                                       "tokens_out": 20, "cost_usd": 0.0012},
                                {"model": "m2", "outcome": "error", "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}]}
    return [*ok, failed]


def test_summarize_counts_the_spend_of_requests_that_got_no_answer():
    prices = {"m0": (1.0, 2.0), "m1": (4.0, 8.0), "m2": (10.0, 30.0)}
    s = summarize(_failed_cascade_rows(), prices)
    assert s["unanswered_cost_usd"] == pytest.approx(0.0016)
    assert s["cost_usd"] == pytest.approx(0.002 + 0.0016)  # every dollar spent
    assert s["answered"] == 2 and s["forwarded_cost_usd"] == pytest.approx(0.0)
    base = 2 * (100 * 10.0 + 10 * 30.0) / 1e6  # the baseline: the answered routed requests only
    assert s["baseline_cost_usd"] == pytest.approx(base) and s["saved_usd"] == pytest.approx(base - 0.002)


def test_summarize_has_no_baseline_when_the_prices_are_another_pyramids():
    s = summarize(_failed_cascade_rows(), {"smollm2": (0.01, 0.02), "qwen": (0.02, 0.04)})
    assert s["unpriced_models"] == ["m0"]
    assert s["baseline_model"] is None and s["baseline_cost_usd"] is None and s["saved_usd"] is None
    assert s["cost_usd"] == pytest.approx(0.0036)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_shared_secret_is_made_once_per_log_and_read_by_everyone(db, tmp_path, request):
    """What the dashboard signs its session cookies with: every process on the log gets the same."""
    from concurrent.futures import ThreadPoolExecutor

    from tierwise.decision_log.dialect import Dialect

    if db == "sqlite":
        url = str(tmp_path / "log.sqlite")
    else:
        url = request.getfixturevalue("new_postgres_db")("secret")
    DecisionLog(url).close()

    def ask(_):
        d = Dialect(url)
        con = d.connect()
        try:
            return d.shared_secret(con, "dashboard_session")
        finally:
            con.close()

    with ThreadPoolExecutor(8) as pool:  # first use from many connections at once
        got = set(pool.map(ask, range(16)))
    assert len(got) == 1 and len(got.pop()) == 64
    assert len({ask(0), ask(1)}) == 1  # and it stays the same
