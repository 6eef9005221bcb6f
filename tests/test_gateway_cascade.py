"""The confidence cascade behind the gateway: ``model="tierwise:cascade"`` with the real ``openai`` client.

Backends are the local stub (``tierwise.testing``): ``confident`` / ``unsure`` models answer
with token logprobs of -0.05 / -3.0, so with thresholds of -1.0 a confident model is kept and an
unsure one escalated. Two real ``tierwise serve`` processes (cascade from the YAML and from
``--cascade``) cover the happy paths; faults use in-process apps with a 1 s model timeout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from _helpers import log_row, log_rows, prices_of
from tierwise.testing import StubBackend, free_port, start_gateway, stop_gateway, write_pyramid

from tierwise.cascade import Thresholds  # noqa: E402

MSGS = [{"role": "user", "content": "What is the capital of France?"}]


def _thresholds(path: Path, models: list[str], value: float = -1.0) -> Path:
    return Thresholds(models, [value] * (len(models) - 1)).save(path)


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "Traceback" not in err["message"]
    return err


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=30)


def _stream_text(chunks) -> str:
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


@pytest.fixture(scope="module")
def stub():
    with StubBackend() as s:
        yield s


def _serve(stub, tmp: Path, modes: tuple[str, ...], *, yaml_cascade: bool):
    """A real ``tierwise serve``; thresholds -1.0 come from the YAML (relative path) or ``--cascade``."""
    names = [f"m{i}" for i in range(len(modes))]
    _thresholds(tmp / "cascade.json", names)
    extra = "cascade: cascade.json\n" if yaml_cascade else ""
    cfg = write_pyramid(tmp / "pyramid.yaml", stub.url, str(tmp / "log.sqlite"), modes=modes, extra=extra)
    port = free_port()
    args = () if yaml_cascade else ("--cascade", str(tmp / "cascade.json"))
    proc = start_gateway(cfg, port, *args)
    return proc, {"url": f"http://127.0.0.1:{port}", "cfg": cfg, "log": tmp / "log.sqlite", "sent": 0}


@pytest.fixture(scope="module")
def confident_gw(stub, tmp_path_factory):
    """m0 is confident: the cascade keeps its answer. Cascade from ``cascade:`` in the YAML."""
    proc, info = _serve(stub, tmp_path_factory.mktemp("confident"), ("confident", "unsure", "echo"), yaml_cascade=True)
    yield info
    stop_gateway(proc)


@pytest.fixture(scope="module")
def unsure_gw(stub, tmp_path_factory):
    """m0 and m1 are unsure: every request reaches m2 (confident). Cascade from ``--cascade``."""
    proc, info = _serve(stub, tmp_path_factory.mktemp("unsure"), ("unsure", "unsure", "confident"), yaml_cascade=False)
    yield info
    stop_gateway(proc)


# -- happy paths --------------------------------------------------------------------------------


def test_confident_small_model_answers_alone(confident_gw, stub):
    before = dict(stub.calls)
    raw = _client(confident_gw["url"]).chat.completions.with_raw_response.create(
        model="tierwise:cascade", messages=MSGS, max_tokens=32)
    confident_gw["sent"] += 1
    resp, h = raw.parse(), raw.headers
    assert {k: stub.calls.get(k, 0) - before.get(k, 0) for k in ("confident", "unsure", "echo")} == {
        "confident": 1, "unsure": 0, "echo": 0}
    assert resp.model == "m0" == h["x-tierwise-model"]
    assert resp.choices[0].message.content == "echo: " + MSGS[0]["content"]
    assert h["x-tierwise-router"] == "cascade" and h["x-tierwise-cascade-chain"] == "m0:-0.05:kept"
    assert "x-tierwise-fallbacks" not in h
    u = resp.usage
    pin, pout = prices_of(confident_gw["cfg"])["m0"]
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.prompt_tokens > 0
    assert float(h["x-tierwise-cost-usd"]) == pytest.approx((u.prompt_tokens * pin + u.completion_tokens * pout) / 1e6)
    row = log_row(confident_gw["log"], h["x-request-id"])
    assert row["router"] == "cascade" and row["model"] == "m0" and row["requested_model"] == "tierwise:cascade"
    assert row["status"] == 200 and row["tokens_in"] == u.prompt_tokens and row["tokens_out"] == u.completion_tokens
    assert [(s["model"], s["outcome"]) for s in row["cascade_chain"]] == [("m0", "kept")]


def test_plain_tierwise_uses_the_cascade_without_a_trained_router(confident_gw):
    raw = _client(confident_gw["url"]).chat.completions.with_raw_response.create(model="tierwise", messages=MSGS)
    confident_gw["sent"] += 1
    assert raw.headers["x-tierwise-router"] == "cascade" and raw.parse().model == "m0"
    models = {m["id"]: m for m in httpx.get(confident_gw["url"] + "/v1/models").json()["data"]}
    assert models["tierwise:cascade"]["router"] == "cascade" and models["tierwise"]["router"] == "cascade"
    assert models["tierwise:cascade"]["thresholds"].endswith("cascade.json")
    # a knob still means the router
    raw = _client(confident_gw["url"]).chat.completions.with_raw_response.create(model="tierwise:0.5", messages=MSGS)
    confident_gw["sent"] += 1
    assert raw.headers["x-tierwise-router"] == "stand-in:heuristic"


def test_unsure_small_model_escalates_to_the_top(unsure_gw, stub):
    before = dict(stub.calls)
    raw = _client(unsure_gw["url"]).chat.completions.with_raw_response.create(
        model="tierwise:cascade", messages=MSGS, max_tokens=32)
    unsure_gw["sent"] += 1
    resp, h = raw.parse(), raw.headers
    assert stub.calls.get("unsure", 0) - before.get("unsure", 0) == 2
    assert stub.calls.get("confident", 0) - before.get("confident", 0) == 1
    assert resp.model == "m2" == h["x-tierwise-model"]
    # the top model gets the client's body unchanged (no logprobs asked), so its confidence is unknown
    assert h["x-tierwise-cascade-chain"] == "m0:-3.00:escalated,m1:-3.00:escalated,m2:none:kept"
    row = log_row(unsure_gw["log"], h["x-request-id"])
    steps = row["cascade_chain"]
    assert [(s["model"], s["confidence"], s["outcome"]) for s in steps] == [
        ("m0", -3.0, "escalated"), ("m1", -3.0, "escalated"), ("m2", None, "kept")]
    # the body's usage is the answering model's own; the log and the cost header count every model called
    assert resp.usage.prompt_tokens == steps[-1]["tokens_in"] and resp.usage.completion_tokens == steps[-1]["tokens_out"]
    assert row["tokens_in"] == sum(s["tokens_in"] for s in steps) > resp.usage.prompt_tokens
    assert row["tokens_out"] == sum(s["tokens_out"] for s in steps)
    prices = prices_of(unsure_gw["cfg"])
    want = sum((s["tokens_in"] * prices[s["model"]][0] + s["tokens_out"] * prices[s["model"]][1]) / 1e6 for s in steps)
    assert float(h["x-tierwise-cost-usd"]) == pytest.approx(want) == pytest.approx(row["cost_usd"])
    assert row["model"] == "m2" and row["router"] == "cascade" and row["fallbacks"] == []


@pytest.mark.parametrize("gw, kept", [("confident_gw", "m0"), ("unsure_gw", "m2")], ids=["kept_low", "escalated"])
def test_stream_equals_non_stream(gw, kept, request):
    info = request.getfixturevalue(gw)
    c = _client(info["url"])
    msgs = [{"role": "user", "content": "stream me three words"}]
    raw = c.chat.completions.with_raw_response.create(model="tierwise:cascade", messages=msgs)
    whole = raw.parse()
    chunks = list(c.chat.completions.create(model="tierwise:cascade", messages=msgs, stream=True,
                                            stream_options={"include_usage": True}))
    info["sent"] += 2
    assert _stream_text(chunks) == whole.choices[0].message.content and whole.model == kept
    assert {ch.model for ch in chunks} == {kept}
    finish = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    tw = finish[0].tierwise  # extra field: the official client keeps unknown fields
    assert tw["model"] == kept and tw["router"] == "cascade"
    # same chain as the non-stream answer, except that a live-streamed top model has no logprobs
    assert tw["chain"] == raw.headers["x-tierwise-cascade-chain"].replace("m2:-0.05:kept", "m2:none:kept")
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert tw["cost_usd"] == pytest.approx(float(raw.headers["x-tierwise-cost-usd"]))
    row = log_row(info["log"], chunks[0].id)
    assert row["stream"] and row["status"] == 200 and row["model"] == kept and row["router"] == "cascade"
    assert [s["model"] for s in row["cascade_chain"]] == [s["model"] for s in tw["steps"]]
    # the wire format: the same chunk shape as routed streams, ending with [DONE]
    with httpx.stream("POST", info["url"] + "/v1/chat/completions", timeout=30,
                      json={"model": "tierwise:cascade", "messages": msgs, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["x-tierwise-router"] == "cascade"
        assert r.headers["x-tierwise-model"] == kept
        lines = [x for x in r.iter_lines() if x]
    info["sent"] += 1
    assert lines[-1] == "data: [DONE]" and all(x.startswith("data: ") for x in lines)
    assert json.loads(lines[-2][6:])["tierwise"]["model"] == kept


def test_stream_escalated_chain_in_final_chunk(unsure_gw):
    chunks = list(_client(unsure_gw["url"]).chat.completions.create(model="tierwise:cascade", messages=MSGS,
                                                                     stream=True))
    unsure_gw["sent"] += 1
    tw = chunks[-1].tierwise
    # the top streams live without logprobs, so its confidence is unknown (none); it is always kept
    assert tw["chain"] == "m0:-3.00:escalated,m1:-3.00:escalated,m2:none:kept"
    row = log_row(unsure_gw["log"], chunks[0].id)
    assert [s["outcome"] for s in row["cascade_chain"]] == ["escalated", "escalated", "kept"]
    assert row["tokens_in"] == sum(s["tokens_in"] for s in row["cascade_chain"])
    with_usage = list(_client(unsure_gw["url"]).chat.completions.create(
        model="tierwise:cascade", messages=MSGS, stream=True, stream_options={"include_usage": True}))
    unsure_gw["sent"] += 1
    assert with_usage[-1].usage is not None and with_usage[-1].tierwise["chain"] == tw["chain"]  # the usage chunk too


def test_log_and_stats_count_every_cascade_request(unsure_gw):
    from typer.testing import CliRunner

    from tierwise.cli import app
    from tierwise.decision_log import summarize

    rows = log_rows(unsure_gw["log"], want=unsure_gw["sent"])
    assert len(rows) == unsure_gw["sent"] and all(r["router"] == "cascade" for r in rows)
    runner = CliRunner()
    res = runner.invoke(app, ["log", "--json", "--last", "2", "--log", str(unsure_gw["log"])])
    assert res.exit_code == 0, res.output
    assert all(json.loads(x)["cascade_chain"] for x in res.output.strip().splitlines())
    res = runner.invoke(app, ["log", "--log", str(unsure_gw["log"])], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "cascade m0->m1->m2" in res.output, res.output
    res = runner.invoke(app, ["stats", "--json", "--config", str(unsure_gw["cfg"])])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    # baseline: the kept answer's own tokens at the top model's prices, not the totals over 3 models
    pin, pout = prices_of(unsure_gw["cfg"])["m2"]
    kept = [next(st for st in r["cascade_chain"] if st["outcome"] == "kept") for r in rows]
    want = sum((k["tokens_in"] * pin + k["tokens_out"] * pout) / 1e6 for k in kept)
    assert s["baseline_cost_usd"] == pytest.approx(want)
    assert s["cost_usd"] == pytest.approx(summarize(rows, prices_of(unsure_gw["cfg"]))["cost_usd"])
    assert s["saved_usd"] < 0  # every request went through all three models: the cascade cost more here


# -- faults ---------------------------------------------------------------------------------------


class _Server:
    """uvicorn in a thread, for in-process apps (faster than a process per pyramid)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _app(stub, tmp: Path, modes: tuple[str, ...], *, cascade: bool = True, **kw):
    from tierwise.config import Pyramid
    from tierwise.gateway import create_app

    names = [f"m{i}" for i in range(len(modes))]
    extra = f"cascade: {_thresholds(tmp / 'c.json', names)}\n" if cascade else ""
    cfg = write_pyramid(tmp / "p.yaml", stub.url, str(tmp / "log.sqlite"), modes=modes, timeout_s=1.0, extra=extra)
    return create_app(Pyramid.load(cfg), **kw)


def test_failing_lower_model_is_escalated_past(stub, tmp_path):
    with _Server(_app(stub, tmp_path, ("fail", "confident", "echo"))) as url:
        c = _client(url)
        raw = c.chat.completions.with_raw_response.create(model="tierwise:cascade", messages=MSGS)
        chunks = list(c.chat.completions.create(model="tierwise:cascade", messages=MSGS, stream=True))
    resp = raw.parse()
    assert resp.model == "m1" and raw.headers["x-tierwise-cascade-chain"] == "m0:none:error,m1:-0.05:kept"
    assert raw.headers["x-tierwise-fallbacks"] == "m0"
    assert _stream_text(chunks) == resp.choices[0].message.content and chunks[-1].tierwise["model"] == "m1"
    rows = log_rows(tmp_path / "log.sqlite", want=2)
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == 200 and r["model"] == "m1"
        assert [(f["model"], f["reason"]) for f in r["fallbacks"]] == [("m0", "error")]
        assert "500" in r["fallbacks"][0]["error"]
        assert [s["outcome"] for s in r["cascade_chain"]] == ["error", "kept"]


def test_top_model_stalling_is_a_timely_502(stub, tmp_path):
    with _Server(_app(stub, tmp_path, ("unsure", "stall"))) as url:
        for stream in (False, True):
            t = time.perf_counter()
            r = httpx.post(url + "/v1/chat/completions", timeout=30,
                           json={"model": "tierwise:cascade", "stream": stream, "messages": MSGS})
            assert time.perf_counter() - t < 6  # m1's timeout_s is 1 s (slot wait + answer at most)
            err = _error(r, 502)
            assert err["code"] == "backend_error" and "m1" in err["message"]
            assert r.headers["x-tierwise-router"] == "cascade"
    rows = log_rows(tmp_path / "log.sqlite", want=2)
    assert [r["status"] for r in rows] == [502, 502]
    for r in rows:
        assert r["router"] == "cascade" and "m1" in r["error"]
        assert [(s["model"], s["outcome"]) for s in r["cascade_chain"]] == [("m0", "escalated"), ("m1", "error")]
        assert r["tokens_in"] > 0 and r["cost_usd"] > 0  # m0's answer was paid for
        assert [(f["model"], f["reason"]) for f in r["fallbacks"]] == [("m1", "timeout")]


def test_lower_timeout_escalates_and_top_stall_mid_stream_ends_with_error(stub, tmp_path):
    app = _app(stub, tmp_path, ("stall", "stall-after-first"))
    with _Server(app) as url:
        c = _client(url)
        t = time.perf_counter()
        raw = c.chat.completions.with_raw_response.create(model="tierwise:cascade", messages=MSGS)
        assert 1.0 <= time.perf_counter() - t < 6
        assert raw.parse().model == "m1" and raw.headers["x-tierwise-cascade-chain"] == "m0:none:error,m1:none:kept"
        got = []
        with pytest.raises(openai.APIError, match="stalled"):
            for ch in c.chat.completions.create(model="tierwise:cascade", messages=MSGS, stream=True):
                got.append(ch)
        assert _stream_text(got) == "echo:" and got[0].model == "m1"
        # a client leaving mid-stream: logged as 499, its slots and in-flight count released
        body = {"model": "tierwise:cascade", "stream": True, "messages": MSGS}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            assert next(r.iter_lines()).startswith("data: ")
        deadline = time.monotonic() + 5
        while httpx.get(url + "/health").json()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/health").json()["in_flight"] == 0
        engine = app.state.engine
        deadline = time.monotonic() + 5
        while any(s.in_use for s in engine.slots) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [s.in_use for s in engine.slots] == [0, 0]
    rows = log_rows(tmp_path / "log.sqlite", want=3)
    assert [r["status"] for r in rows] == [200, 502, 499]
    assert "stalled" in rows[1]["error"] and rows[1]["model"] == "m1"
    assert rows[2]["model"] == "m1" and [(s["model"], s["outcome"]) for s in rows[2]["cascade_chain"]] == [
        ("m0", "error"), ("m1", "kept")]
    assert [(s["model"], s["outcome"]) for s in rows[1]["cascade_chain"]] == [("m0", "error"), ("m1", "error")]
    # what a cut-off top model streamed was paid for: its prompt and the one piece it sent
    top = rows[1]["cascade_chain"][1]
    assert top["tokens_in"] > 0 and top["tokens_out"] >= 1 and rows[1]["tokens_in"] == top["tokens_in"]
    assert rows[2]["cascade_chain"][1]["tokens_in"] > 0 and rows[2]["cost_usd"] > 0


def test_cascade_respects_model_slots(stub, tmp_path):
    """Two concurrent cascade requests on a model with max_concurrency 1 run one after the other."""
    from tierwise.config import Pyramid
    from tierwise.gateway import create_app

    _thresholds(tmp_path / "c.json", ["m0", "m1"])
    cfg = write_pyramid(tmp_path / "p.yaml", stub.url, str(tmp_path / "log.sqlite"), modes=("slow-400", "echo"),
                        extra="cascade: c.json\n")
    cfg.write_text(cfg.read_text().replace("max_concurrency: 64", "max_concurrency: 1", 1))
    with _Server(create_app(Pyramid.load(cfg))) as url:
        body = {"model": "tierwise:cascade", "messages": MSGS}
        out: list[float] = []

        def one() -> None:
            t = time.perf_counter()
            httpx.post(url + "/v1/chat/completions", json=body, timeout=30).raise_for_status()
            out.append(time.perf_counter() - t)

        threads = [threading.Thread(target=one) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    assert len(out) == 2 and max(out) >= 0.75  # the second waited for m0's only slot


# -- configuration --------------------------------------------------------------------------------


def test_cascade_unconfigured_is_400(stub, tmp_path):
    with _Server(_app(stub, tmp_path, ("echo", "echo"), cascade=False)) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=30, json={"model": "tierwise:cascade", "messages": MSGS})
        err = _error(r, 400)
        assert err["code"] == "cascade_not_configured" and err["param"] == "model"
        assert "tierwise cascade calibrate" in err["message"] and "--cascade" in err["message"]
        assert "tierwise:cascade" not in {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        r = httpx.post(url + "/v1/chat/completions", timeout=30, json={"model": "tierwise", "messages": MSGS})
        assert r.status_code == 200 and r.headers["x-tierwise-router"] == "stand-in:heuristic"
    assert [r["status"] for r in log_rows(tmp_path / "log.sqlite", want=2)] == [400, 200]


def test_trained_router_keeps_plain_tierwise_routed(stub, tmp_path):
    from types import SimpleNamespace

    trained = SimpleNamespace(name="knn:trained", rule="threshold")
    app = _app(stub, tmp_path, ("echo", "echo"), router=trained)
    from tierwise.engine.plan import kind_of

    engine = app.state.engine
    assert engine.cascade is not None and not engine.cascade_default
    assert kind_of("tierwise:cascade", engine.order, cascade=True, cascade_default=engine.cascade_default)[0] == "cascade"
    assert kind_of("tierwise", engine.order, cascade=True, cascade_default=engine.cascade_default)[0] == "routed"
    app.state.log.close()


def test_pyramid_cascade_path_is_relative_to_the_yaml(tmp_path):
    from tierwise.config import Pyramid

    sub = tmp_path / "conf"
    sub.mkdir()
    cfg = write_pyramid(sub / "p.yaml", "http://127.0.0.1:9/v1", str(tmp_path / "log.sqlite"), modes=("echo", "echo"),
                        extra="cascade: th/cascade.json\n")
    assert Pyramid.load(cfg).cascade == str((sub / "th" / "cascade.json").resolve())
    assert Pyramid.load(write_pyramid(sub / "q.yaml", "http://127.0.0.1:9/v1", "x.sqlite")).cascade is None


def _serve_exit(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return subprocess.run(
        [sys.executable, "-c", "from tierwise.cli import main; main()", "serve", "--config", str(cfg),
         "--port", str(free_port()), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": src},
    )


def test_mismatched_or_missing_thresholds_stop_serve_with_exit_2(tmp_path):
    bad = _thresholds(tmp_path / "other.json", ["a", "b"])
    log = str(tmp_path / "log.sqlite")
    cfg = write_pyramid(tmp_path / "p.yaml", "http://127.0.0.1:9/v1", log, modes=("echo", "echo"))
    res = _serve_exit(cfg, "--cascade", str(bad))
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1
    assert str(bad) in out and "['a', 'b']" in out and "['m0', 'm1']" in out
    cfg = write_pyramid(tmp_path / "q.yaml", "http://127.0.0.1:9/v1", log, modes=("echo", "echo"),
                        extra="cascade: missing.json\n")
    res = _serve_exit(cfg)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2 and str(tmp_path / "missing.json") in out and "Traceback" not in out, out


def test_old_log_gains_the_cascade_column(tmp_path):
    """A log written before the cascade column existed opens, keeps its rows and accepts new ones."""
    from tierwise.decision_log import DecisionLog, RequestRecord

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,"
                    " prompt_hash TEXT NOT NULL, prompt TEXT, requested_model TEXT, router TEXT, rule TEXT,"
                    " knob DOUBLE PRECISION, scores TEXT,"
                    " chosen TEXT, model TEXT, fallbacks TEXT, tokens_in INTEGER, tokens_out INTEGER,"
                    " latency_ms DOUBLE PRECISION, route_ms DOUBLE PRECISION, cost_usd DOUBLE PRECISION,"
                    " status INTEGER NOT NULL, error TEXT, stream INTEGER)")
        con.execute("INSERT INTO requests (id, ts, prompt_hash, status, scores, fallbacks, stream) "
                    "VALUES ('old', 1, 'h', 200, '{}', '[]', 0)")
    log = DecisionLog(path)
    log.record(RequestRecord(id="new", ts=2, prompt_hash="h", status=200, router="cascade",
                             cascade_chain=[{"model": "m0", "confidence": -0.1, "outcome": "kept"}]))
    log.close()
    rows = DecisionLog(path).rows()
    assert [r["id"] for r in rows] == ["old", "new"]
    assert rows[0]["cascade_chain"] is None and rows[1]["cascade_chain"][0]["outcome"] == "kept"
