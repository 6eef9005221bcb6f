"""The gateway as users run it: a real ``tierwise serve`` process, the real ``openai`` client.

Backends are a local OpenAI-compatible stub server (``tierwise.testing``) whose behaviour per
model is real HTTP: answers, HTTP 500, a connection that never answers, a stream that stalls after
its first token. The router is the real stand-in (``Router.stand_in``). Real-model runs are in
``test_server_llama.py``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from _helpers import log_row, log_rows, prices_of
from tierwise.testing import StubBackend, free_port, start_gateway, stop_gateway, write_pyramid

KEY = "sk-tierwise-test"
LONG_NUMERIC = " ".join(f"step {i}: add {i * 37} to {i * 91} and multiply by {i % 7}" for i in range(150))


@pytest.fixture(scope="module")
def stub():
    with StubBackend() as s:
        yield s


@pytest.fixture(scope="module")
def main_gw(stub, tmp_path_factory):
    """Three healthy models, client API key, small body limit."""
    tmp = tmp_path_factory.mktemp("gw")
    cfg = write_pyramid(tmp / "pyramid.yaml", stub.url, str(tmp / "log.sqlite"),
                        extra=f"api_keys: [{KEY}]\nmax_body_bytes: 50000\n")
    port = free_port()
    proc = start_gateway(cfg, port)
    yield {"url": f"http://127.0.0.1:{port}", "cfg": cfg, "log": tmp / "log.sqlite"}
    stop_gateway(proc)


@pytest.fixture()
def client(main_gw):
    return openai.OpenAI(base_url=main_gw["url"] + "/v1", api_key=KEY, max_retries=0, timeout=30)


def _router(cfg: Path):
    from tierwise.config import Pyramid
    from tierwise.engine.build import load_router

    return load_router(Pyramid.load(cfg))


def _assert_error_shape(body: dict, status: int, resp_status: int) -> dict:
    assert resp_status == status
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"] and "Traceback" not in err["message"]
    return err


# -- happy paths ------------------------------------------------------------------------------


def test_non_stream_routed_headers_match_body_and_log(client, main_gw):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    raw = client.chat.completions.with_raw_response.create(model="tierwise", messages=msgs, max_tokens=32)
    resp = raw.parse()
    h = raw.headers
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == "echo: What is the capital of France?"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == h["x-tierwise-model"] and resp.model in {"m0", "m1", "m2"}
    assert h["x-request-id"].startswith("chatcmpl-") and h["x-request-id"] != resp.id  # the backend's id is kept
    assert h["x-tierwise-router"] == "stand-in:heuristic"
    assert 0.0 <= float(h["x-tierwise-score"]) <= 1.0
    pin, pout = prices_of(main_gw["cfg"])[resp.model]
    u = resp.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert float(h["x-tierwise-cost-usd"]) == pytest.approx((u.prompt_tokens * pin + u.completion_tokens * pout) / 1e6)
    row = log_row(main_gw["log"], h["x-request-id"])
    assert row["upstream_id"] == resp.id
    assert row["status"] == 200 and row["model"] == resp.model and row["requested_model"] == "tierwise"
    assert row["tokens_in"] == u.prompt_tokens and row["tokens_out"] == u.completion_tokens
    assert set(row["scores"]) == {"m0", "m1", "m2"} and row["fallbacks"] == []
    assert row["route_ms"] > 0 and row["latency_ms"] >= row["route_ms"]


@pytest.mark.parametrize("knob", [None, "0", "0.75", "0.99"])
@pytest.mark.parametrize("prompt", ["hi", LONG_NUMERIC], ids=["short", "long_numeric"])
def test_routing_follows_router_and_knob(client, main_gw, knob, prompt):
    from tierwise.router import conversation_text

    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    model = "tierwise" if knob is None else f"tierwise:{knob}"
    resp = client.chat.completions.create(model=model, messages=msgs, max_tokens=16)
    router = _router(main_gw["cfg"])
    want = router.route(conversation_text(msgs), knob=None if knob is None else router.parse_knob(knob)).model
    assert resp.model == want


def test_knob_changes_the_choice_for_a_hard_prompt(client):
    msgs = [{"role": "user", "content": LONG_NUMERIC}]
    chosen = {client.chat.completions.create(model=f"tierwise:{k}", messages=msgs, max_tokens=8).model
              for k in ("0", "0.99")}
    assert len(chosen) == 2  # "always cheapest" and "high bar" must not agree on a long numeric prompt


def test_routes_on_the_whole_conversation(client, main_gw):
    """Same last turn, different history: the log's prompt hash covers the whole conversation."""
    a = client.chat.completions.create(model="tierwise", messages=[{"role": "user", "content": "and then?"}])
    b = client.chat.completions.create(model="tierwise", messages=[
        {"role": "user", "content": LONG_NUMERIC}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and then?"}])
    ra, rb = log_row(main_gw["log"], a.id), log_row(main_gw["log"], b.id)
    assert ra["prompt_hash"] != rb["prompt_hash"]
    assert ra["scores"] != rb["scores"]


def test_stream_is_openai_sse(client, main_gw):
    msgs = [{"role": "user", "content": "count to three"}]
    stream = client.chat.completions.create(model="tierwise", messages=msgs, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: count to three"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    row = log_row(main_gw["log"], chunks[0].id)
    assert row["stream"] and row["status"] == 200 and row["tokens_out"] == chunks[-1].usage.completion_tokens


def test_stream_raw_wire_format(main_gw):
    body = {"model": "m1", "messages": [{"role": "user", "content": "wire"}], "stream": True}
    r = httpx.post(main_gw["url"] + "/v1/chat/completions", json=body,
                   headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-tierwise-model"] == "m1"
    events = r.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ")
        obj = json.loads(e[6:])
        assert obj["object"] == "chat.completion.chunk" and "usage" not in obj  # no include_usage asked


def test_direct_model_name_bypasses_router(client, main_gw):
    raw = client.chat.completions.with_raw_response.create(
        model="m2", messages=[{"role": "user", "content": "hi"}])
    resp = raw.parse()
    assert resp.model == "m2" and raw.headers["x-tierwise-router"] == "direct"
    assert "x-tierwise-score" not in raw.headers
    row = log_row(main_gw["log"], resp.id)
    assert row["router"] == "direct" and row["scores"] == {}


def test_models_health_metrics(client, main_gw):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tierwise", "m0", "m1", "m2"]
    h = httpx.get(main_gw["url"] + "/health").json()
    assert h["status"] == "ok" and h["models"] == ["m0", "m1", "m2"]
    client.chat.completions.create(model="m0", messages=[{"role": "user", "content": "metrics"}])
    text = httpx.get(main_gw["url"] + "/metrics").text
    assert 'tierwise_requests_total{model="m0",status="200"}' in text
    assert "tierwise_routing_decision_seconds_bucket" in text
    assert 'tierwise_tokens_total{direction="out",model="m0"}' in text
    assert 'tierwise_cost_usd_total{model="m0"}' in text


# -- errors ------------------------------------------------------------------------------------


def _post(main_gw, body: bytes | dict, key: str | None = KEY, **headers) -> httpx.Response:
    h = {"content-type": "application/json", **headers}
    if key:
        h["authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(main_gw["url"] + "/v1/chat/completions", content=content, headers=h, timeout=30)


@pytest.mark.parametrize("body, status, code, param", [
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_json", None),
    ({"model": "tierwise"}, 422, "invalid_value", "messages"),
    ({"model": "tierwise", "messages": "hello"}, 422, "invalid_value", "messages"),
    ({"model": "tierwise", "messages": [{"role": "user", "content": 5}]}, 422, "invalid_value", "messages.0.content"),
    ({"model": "tierwise", "messages": [{"role": "wizard", "content": "x"}]}, 422, "invalid_value", "messages.0.role"),
    ({"model": "tierwise", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}, 422, "invalid_value",
     "max_tokens"),
    ({"model": "tierwise", "messages": [{"role": "user", "content": "x"}], "n": 0}, 422, "invalid_value", "n"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found", "model"),
    ({"model": "tierwise:fast please", "messages": [{"role": "user", "content": "x"}]}, 400, "invalid_knob", "model"),
    ({"model": "tierwise", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, 400,
     "context_length_exceeded", "messages"),
])
def test_bad_requests_get_openai_errors(main_gw, body, status, code, param):
    r = _post(main_gw, body)
    err = _assert_error_shape(r.json(), status, r.status_code)
    assert err["code"] == code and err["param"] == param
    assert r.headers["x-request-id"].startswith("chatcmpl-")


def test_oversize_body_is_413(main_gw):
    big = {"model": "tierwise", "messages": [{"role": "user", "content": "x" * 60000}]}
    r = _post(main_gw, big)
    assert _assert_error_shape(r.json(), 413, r.status_code)["code"] == "request_too_large"


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="tierwise", messages=[])
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="m0", messages=[{"role": "user", "content": "x"}], max_tokens=9000)


def test_auth(main_gw):
    for key in (None, "sk-wrong"):
        r = _post(main_gw, {"model": "tierwise", "messages": [{"role": "user", "content": "x"}]}, key=key)
        assert _assert_error_shape(r.json(), 401, r.status_code)["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=main_gw["url"] + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(main_gw["url"] + "/health").status_code == 200  # probes need no key


def test_unknown_route_and_method_are_json(main_gw):
    r = httpx.get(main_gw["url"] + "/v1/nothing")
    _assert_error_shape(r.json(), 404, r.status_code)
    r = httpx.get(main_gw["url"] + "/v1/chat/completions")
    _assert_error_shape(r.json(), 405, r.status_code)


def test_feedback(client, main_gw):
    raw = client.chat.completions.with_raw_response.create(model="tierwise",
                                                            messages=[{"role": "user", "content": "rate me"}])
    resp, rid = raw.parse(), raw.headers["x-request-id"]
    url, h = main_gw["url"] + "/v1/feedback", {"authorization": f"Bearer {KEY}"}
    r = httpx.post(url, json={"request_id": rid, "score": 0.75}, headers=h)
    assert r.status_code == 200 and r.json()["score"] == 0.75
    # the backend's own response id (what the client sees as ``resp.id``) finds the same request
    r = httpx.post(url, json={"request_id": resp.id, "score": 0.25}, headers=h)
    assert r.status_code == 200
    r = httpx.post(url, json={"request_id": "chatcmpl-unknown", "score": 0.5}, headers=h)
    assert _assert_error_shape(r.json(), 404, r.status_code)["param"] == "request_id"
    for bad in ({"request_id": resp.id, "score": 1.5}, {"request_id": resp.id, "score": "good"}, {"score": 0.5}):
        r = httpx.post(url, json=bad, headers=h)
        _assert_error_shape(r.json(), 422, r.status_code)
    assert httpx.post(url, json={"request_id": resp.id, "score": 0.5}).status_code == 401
    from tierwise.decision_log import DecisionLog

    fb = {f["request_id"]: f for f in DecisionLog(main_gw["log"]).feedback_rows()}
    assert fb[rid]["score"] == 0.25 and fb[rid]["model"] == resp.model  # the latest rating counts


# -- faults: real HTTP backends that fail or never answer ---------------------------------------


@pytest.fixture(scope="module")
def fault_gw(stub, tmp_path_factory):
    """m0 answers HTTP 500, m1 never answers, m2 works, m3 streams one token then stalls."""
    tmp = tmp_path_factory.mktemp("fault")
    cfg = write_pyramid(tmp / "pyramid.yaml", stub.url, str(tmp / "log.sqlite"),
                        modes=("fail", "stall", "echo", "stall-after-first"), timeout_s=1.0)
    port = free_port()
    proc = start_gateway(cfg, port)
    info = {"url": f"http://127.0.0.1:{port}", "cfg": cfg, "log": tmp / "log.sqlite", "proc": proc, "port": port,
            "sent": 0}
    yield info
    stop_gateway(info["proc"])


def _fault_client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw["url"] + "/v1", api_key="none", max_retries=0, timeout=30)


def test_fallback_on_500_and_timeout(fault_gw):
    c = _fault_client(fault_gw)
    t = time.perf_counter()
    raw = c.chat.completions.with_raw_response.create(model="tierwise:0", messages=[{"role": "user", "content": "hi"}])
    fault_gw["sent"] += 1
    elapsed = time.perf_counter() - t
    resp = raw.parse()
    assert resp.model == "m2" and resp.choices[0].message.content == "echo: hi"
    assert raw.headers["x-tierwise-fallbacks"] == "m0,m1"
    assert 1.0 <= elapsed < 10  # m1's 1 s timeout was waited out, nothing hung
    row = log_row(fault_gw["log"], resp.id)
    assert row["chosen"] == "m0" and row["model"] == "m2" and row["status"] == 200
    assert [(f["model"], f["reason"]) for f in row["fallbacks"]] == [("m0", "error"), ("m1", "timeout")]
    assert "500" in row["fallbacks"][0]["error"]


def test_fallback_before_first_streamed_token(fault_gw):
    c = _fault_client(fault_gw)
    chunks = list(c.chat.completions.create(model="m0", messages=[{"role": "user", "content": "s"}], stream=True))
    fault_gw["sent"] += 1
    assert {ch.model for ch in chunks} == {"m2"}
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "echo: s"
    row = log_row(fault_gw["log"], chunks[0].id)
    assert [f["model"] for f in row["fallbacks"]] == ["m0", "m1"] and row["stream"]


def test_stall_after_first_token_ends_stream_with_error(fault_gw):
    c = _fault_client(fault_gw)
    got = []
    with pytest.raises(openai.APIError, match="stalled"):
        for ch in c.chat.completions.create(model="m3", messages=[{"role": "user", "content": "a b c"}], stream=True):
            got.append(ch)
    fault_gw["sent"] += 1
    assert "".join(ch.choices[0].delta.content or "" for ch in got if ch.choices) == "echo:"
    row = log_row(fault_gw["log"], got[0].id)
    assert row["status"] == 502 and row["model"] == "m3" and "stalled" in row["error"]


def test_client_leaving_mid_stream_frees_the_slot_and_is_logged(fault_gw):
    body = {"model": "m3", "stream": True, "messages": [{"role": "user", "content": "leave early"}]}
    with httpx.stream("POST", fault_gw["url"] + "/v1/chat/completions", json=body, timeout=30) as r:
        rid = r.headers["x-request-id"]
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    fault_gw["sent"] += 1
    row = log_row(fault_gw["log"], rid)
    assert row["status"] == 499 and row["model"] == "m3"
    deadline = time.monotonic() + 5
    while httpx.get(fault_gw["url"] + "/health").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(fault_gw["url"] + "/health").json()["in_flight"] == 0


def test_log_survives_restart(fault_gw):
    c = _fault_client(fault_gw)
    ids = []
    for i in range(5):
        ids.append(c.chat.completions.create(model="m2", messages=[{"role": "user", "content": f"r{i}"}]).id)
        fault_gw["sent"] += 1
    stop_gateway(fault_gw["proc"])  # SIGTERM: queued rows are flushed on shutdown
    rows = log_rows(fault_gw["log"])
    assert len(rows) == fault_gw["sent"]
    assert set(ids) <= {r["upstream_id"] for r in rows}
    with sqlite3.connect(fault_gw["log"]) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    fault_gw["proc"] = start_gateway(fault_gw["cfg"], fault_gw["port"])
    new = c.chat.completions.create(model="m2", messages=[{"role": "user", "content": "after restart"}]).id
    fault_gw["sent"] += 1
    rows = log_rows(fault_gw["log"], want=fault_gw["sent"])
    assert len(rows) == fault_gw["sent"] and new in {r["upstream_id"] for r in rows} and set(ids) <= {r["upstream_id"] for r in rows}


def test_log_and_stats_commands(fault_gw):
    from typer.testing import CliRunner

    from tierwise.cli import app
    from tierwise.decision_log import DecisionLog, summarize

    runner = CliRunner()
    res = runner.invoke(app, ["log", "--last", "3", "--json", "--log", str(fault_gw["log"])])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.strip().splitlines()]
    assert len(lines) == 3 and lines[-1]["id"] == DecisionLog(fault_gw["log"]).rows(last=1)[0]["id"]
    res = runner.invoke(app, ["stats", "--json", "--config", str(fault_gw["cfg"])])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    want = summarize(DecisionLog(fault_gw["log"]).rows(), prices_of(fault_gw["cfg"]))
    assert s["requests"] == want["requests"] == len(DecisionLog(fault_gw["log"]).rows())
    assert s["baseline_model"] == "m3" and s["saved_usd"] == pytest.approx(want["saved_usd"])
    assert s["fallbacks"] >= 4
    res = runner.invoke(app, ["stats", "--config", str(fault_gw["cfg"])])
    assert res.exit_code == 0 and "saved $" in res.output
    res = runner.invoke(app, ["log", "--log", str(fault_gw["log"].parent / "missing.sqlite")])
    assert res.exit_code == 2 and "no decision log" in res.output


# -- in-process: all models failing, overload ----------------------------------------------------


class _Server:
    """uvicorn in a thread for cases that need create_app's knobs (max_pending)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def _app(stub, tmp_path, modes, **kw):
    from tierwise.config import Pyramid
    from tierwise.gateway import create_app

    cfg = write_pyramid(tmp_path / "p.yaml", stub.url, str(tmp_path / "log.sqlite"), modes=modes, timeout_s=1.0)
    return create_app(Pyramid.load(cfg), **kw)


def test_all_backends_failing_is_502(stub, tmp_path):
    with _Server(_app(stub, tmp_path, ("fail", "stall"))) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=30,
                       json={"model": "tierwise", "messages": [{"role": "user", "content": "x"}]})
        err = _assert_error_shape(r.json(), 502, r.status_code)
        assert "m0" in err["message"] and "m1" in err["message"]
        r = httpx.post(url + "/v1/chat/completions", timeout=30,
                       json={"model": "tierwise", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        _assert_error_shape(r.json(), 502, r.status_code)
    rows = log_rows(tmp_path / "log.sqlite")
    assert [r["status"] for r in rows] == [502, 502] and all(len(r["fallbacks"]) == 2 for r in rows)


def test_overload_is_503_not_a_hang(stub, tmp_path):
    with _Server(_app(stub, tmp_path, ("stall", "stall"), max_pending=1)) as url:
        body = {"model": "m0", "messages": [{"role": "user", "content": "x"}]}
        slow = threading.Thread(target=lambda: httpx.post(url + "/v1/chat/completions", json=body, timeout=30))
        slow.start()
        time.sleep(0.3)
        t = time.perf_counter()
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
        assert time.perf_counter() - t < 1.0
        assert _assert_error_shape(r.json(), 503, r.status_code)["code"] == "overloaded"
        assert r.headers["retry-after"] == "1"
        slow.join(30)


def test_feedback_is_strict_and_only_for_answered_requests(client, main_gw):
    url, h = main_gw["url"] + "/v1/feedback", {"authorization": f"Bearer {KEY}"}
    rid = client.chat.completions.with_raw_response.create(
        model="m0", messages=[{"role": "user", "content": "strict"}]).headers["x-request-id"]
    unanswered = _post(main_gw, {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    assert unanswered.status_code == 404
    log_row(main_gw["log"], unanswered.headers["x-request-id"])  # logged: it is a request, with no answer
    r = httpx.post(url, json={"request_id": unanswered.headers["x-request-id"], "score": 0.5}, headers=h)
    err = _assert_error_shape(r.json(), 409, r.status_code)
    assert err["code"] == "request_not_answered" and err["param"] == "request_id" and "no answer" in err["message"]
    for score in ("0.5", True, None, [0.5]):  # no coercion: validated like chat
        r = httpx.post(url, json={"request_id": rid, "score": score}, headers=h)
        assert _assert_error_shape(r.json(), 422, r.status_code)["param"] == "score", score
    r = httpx.post(url, content=json.dumps({"request_id": rid, "score": 0.5}),
                   headers={**h, "content-type": "text/plain"})
    assert _assert_error_shape(r.json(), 415, r.status_code)["code"] == "unsupported_media_type"
    r = httpx.post(url, json={"request_id": rid, "score": 1}, headers=h)  # an integer is a number
    assert r.status_code == 200 and r.json()["score"] == 1.0


def test_metrics_count_the_spend_of_requests_that_got_no_answer():
    """A cascade whose top model failed (502) paid for the lower models' calls: the cost counter has
    it, as `tierwise stats` and the dashboard do; a refused request spent nothing and adds no series."""
    from prometheus_client import generate_latest

    from tierwise.engine.record import CascadeStep, RequestRecord
    from tierwise.gateway.metrics import Metrics

    m = Metrics()
    failed = RequestRecord(id="c", ts=0.0, status=502, requested_model="tierwise:cascade", latency_ms=900.0)
    failed.set_cascade([CascadeStep("m0", 0.2, "escalated", 1000, 100, 0.0004),
                        CascadeStep("m1", 0.3, "escalated", 1000, 100, 0.0012), CascadeStep("m2", None, "error")])
    failed.tokens_in, failed.tokens_out, failed.cost_usd = 2000, 200, 0.0016
    m.observe(failed)
    m.observe(RequestRecord(id="cut", ts=0.0, status=499, model="m2", tokens_in=10, tokens_out=5, cost_usd=0.0001,
                            latency_ms=10.0))
    m.observe(RequestRecord(id="r", ts=0.0, status=429, latency_ms=1.0))
    m.observe(RequestRecord(id="ok", ts=0.0, status=200, model="m0", tokens_in=10, tokens_out=5, cost_usd=0.00001,
                            latency_ms=10.0))
    text = generate_latest(m.registry).decode()
    cost = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith("tierwise_cost_usd_total{")}
    assert cost == pytest.approx({"m0": 0.00041, "m1": 0.0012, "m2": 0.0001})
    assert sum(cost.values()) == pytest.approx(0.0016 + 0.0001 + 0.00001)  # = stats' cost_usd over these rows
    assert 'tierwise_tokens_total{direction="in",model="m1"} 1000.0' in text and 'model="none"' not in text.split(
        "tierwise_tokens_total")[-1]


def test_stats_without_the_pyramid_that_served_the_log_says_so(tmp_path):
    """`tierwise stats --log X` with no --config prices against the embedded pyramid: the log's models
    are not in it, so there is no baseline to show, and it says which models and what to pass."""
    from typer.testing import CliRunner

    from tierwise.cli import app
    from tierwise.decision_log import DecisionLog
    from tierwise.engine.record import RequestRecord

    log = DecisionLog(tmp_path / "log.sqlite")
    for i, model in enumerate(("gpt-4o", "gpt-4o-mini", "gpt-4o-mini")):
        log.record(RequestRecord(id=f"r{i}", ts=time.time(), status=200, model=model, tokens_in=1000, tokens_out=200,
                                 cost_usd=0.02, latency_ms=100.0))
    log.record(RequestRecord(id="failed", ts=time.time(), status=502, model=None, tokens_in=500, tokens_out=100,
                             cost_usd=0.0016, latency_ms=100.0))
    log.close()
    res = CliRunner().invoke(app, ["stats", "--log", str(tmp_path / "log.sqlite")])
    assert res.exit_code == 0, res.output
    assert "gpt-4o, gpt-4o-mini" in res.output and "--config" in res.output and "no price" in res.output
    assert "saved $" not in res.output and "saved $-" not in res.output
    assert "no answer (not in the baseline): $0.001600" in res.output and "total spend $0.061600" in res.output
    res = CliRunner().invoke(app, ["stats", "--json", "--log", str(tmp_path / "log.sqlite")])
    s = json.loads(res.stdout)
    assert s["unpriced_models"] == ["gpt-4o", "gpt-4o-mini"] and s["saved_usd"] is None
    assert s["cost_usd"] == pytest.approx(0.0616) and s["unanswered_cost_usd"] == pytest.approx(0.0016)
