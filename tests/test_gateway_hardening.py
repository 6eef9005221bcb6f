"""Abuse and faults against a real ``tierwise serve``: the gateway stays up, closed and honest.

Each test reproduces one way a gateway fails under bad input or bad luck (huge requests on the
event loop, guessable ids, slow bodies, silent open auth, abandoned requests, leaked upstream
details) and checks the fix from outside, over loopback.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tierwise.testing import write_pyramid

ALICE, BOB, ADMIN = "sk-alice", "sk-bob", "sk-admin"
MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def keyed(stub, gateway):
    extra = f"api_keys: [{ALICE}, {BOB}]\nadmin_keys: [{ADMIN}]\nbody_timeout_s: 1\nheader_timeout_s: 1\n"
    return gateway(stub.url, ("echo", "slow-1500", "fail@top"), extra=extra, label="keyed")


def _post(gw, key, body, path="/v1/chat/completions", timeout=30.0):
    return httpx.post(gw.url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=timeout)


def test_request_ids_are_unpredictable(keyed):
    ids = {_post(keyed, ALICE, {"model": "m0", "messages": MSG}).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20
    hexes = [int(i.split("-")[1], 16) for i in ids]
    assert all(h.bit_length() > 100 for h in hexes)  # 128 random bits, not a counter
    r = httpx.post(keyed.url + "/v1/chat/completions", json={"model": "m0", "messages": MSG})
    assert r.status_code == 401 and "x-request-id" not in r.headers  # nothing minted for strangers


def test_only_the_key_that_made_a_request_may_rate_it(keyed):
    rid = _post(keyed, ALICE, {"model": "m0", "messages": MSG}).headers["x-request-id"]
    fb = {"request_id": rid, "score": 1.0}
    r = _post(keyed, BOB, fb, "/v1/feedback")
    assert r.status_code == 404 and r.json()["error"]["param"] == "request_id"  # bob learns nothing
    assert _post(keyed, ALICE, fb, "/v1/feedback").status_code == 200
    assert _post(keyed, ADMIN, {**fb, "score": 0.5}, "/v1/feedback").status_code == 200
    row = keyed.row(rid)
    assert row["key_hash"] and ALICE not in json.dumps(row)  # a hash of the key, never the key


def test_half_sent_body_is_closed_within_the_body_timeout(keyed):
    port = int(keyed.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"authorization: Bearer " + ALICE.encode() + b"\r\ncontent-length: 5000\r\n\r\n{\"model\": ")
        t = time.monotonic()
        head = b""
        while b"request_timeout" not in head and time.monotonic() - t < 5:
            part = s.recv(4096)
            if not part:
                break
            head += part
        elapsed = time.monotonic() - t
    assert head.startswith(b"HTTP/1.1 408") and b"request_timeout" in head, head[:200]
    assert 0.8 <= elapsed < 3.0, elapsed


def _read_until_closed(s: socket.socket, limit_s: float) -> tuple[bytes, float]:
    t, got = time.monotonic(), b""
    while time.monotonic() - t < limit_s:
        part = s.recv(4096)
        if not part:
            break
        got += part
    return got, time.monotonic() - t


def test_trickled_headers_are_cut_off_at_the_header_timeout(keyed):
    """slowloris: headers a byte at a time never reach the app, so only the protocol can stop them."""
    port = int(keyed.url.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        t = time.monotonic()
        for s in socks:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: a")
        time.sleep(0.3)
        for s in socks:
            s.sendall(b"b")  # still trickling: each byte must not restart the clock
        # meanwhile a normal request is served at once
        assert _post(keyed, ALICE, {"model": "m0", "messages": MSG}, timeout=5).status_code == 200
        got, _ = _read_until_closed(socks[0], 5)
        elapsed = time.monotonic() - t
        assert got.startswith(b"HTTP/1.1 408") and b"request_timeout" in got, got[:200]
        assert 0.8 <= elapsed < 3.0, elapsed
        for s in socks[1:]:
            rest, _ = _read_until_closed(s, 3)
            assert rest.startswith(b"HTTP/1.1 408"), rest[:100]
    finally:
        for s in socks:
            s.close()


def test_keep_alive_connection_is_not_cut_while_idle_or_after_headers(keyed):
    port = int(keyed.url.rsplit(":", 1)[1])
    body = json.dumps({"model": "m0", "messages": MSG}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"authorization: Bearer " + ALICE.encode() + b"\r\ncontent-length: " + str(len(body)).encode()
           + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(2):  # two requests on one connection, 1.5 s apart (past the header timeout)
            s.sendall(req)
            got = b""
            while b'"choices"' not in got:
                got += s.recv(65536)
            assert got.startswith(b"HTTP/1.1 200"), got[:100]
            time.sleep(1.5)


def test_health_answers_while_a_huge_request_is_parsed(keyed, tmp_path):
    # sent by another process: encoding and sending 3 MB from this one would hold its GIL and slow
    # the /health probe below, which would then measure the client, not the gateway
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"model": "tierwise", "messages": [{"role": "user", "content": "w"}] * 100_000}))
    cmd = ["curl", "-s", "-w", "%{http_code}\\n", "-H", f"authorization: Bearer {ALICE}",
           "-H", "content-type: application/json", "--data-binary", f"@{huge}"]
    # five huge requests back to back (one curl, one connection) while /health is probed
    urls = [x for i in range(5) for x in ("-o", str(tmp_path / f"out{i}.json"), keyed.url + "/v1/chat/completions")]
    sender = subprocess.Popen(cmd + urls, stdout=subprocess.PIPE, text=True)
    worst, probes = 0.0, 0
    with httpx.Client(timeout=5) as probe:
        while sender.poll() is None or probes < 5:
            t0 = time.perf_counter()
            assert probe.get(keyed.url + "/health").status_code == 200
            worst, probes = max(worst, time.perf_counter() - t0), probes + 1
    assert sender.stdout.read().split() == ["413"] * 5
    assert json.loads((tmp_path / "out4.json").read_text())["error"]["code"] == "too_many_messages"
    assert worst < 0.1, f"/health took {worst * 1000:.0f} ms while the request was handled"


def test_client_hanging_up_cancels_a_non_streamed_request(keyed, stub):
    body = {"model": "m1", "messages": [{"role": "user", "content": "abandon me"}]}
    with pytest.raises(httpx.ReadTimeout):
        _post(keyed, ALICE, body, timeout=0.3)  # the client gives up long before the 1.5 s answer
    deadline = time.monotonic() + 5
    rows = []
    while time.monotonic() < deadline:
        rows = [r for r in keyed.rows() if r["status"] == 499]
        if rows:
            break
        time.sleep(0.05)
    assert rows and rows[-1]["requested_model"] == "m1" and rows[-1]["cost_usd"] == 0.0
    assert httpx.get(keyed.url + "/health").json()["in_flight"] == 0


def test_upstream_details_stay_out_of_client_errors(keyed):
    r = _post(keyed, ALICE, {"model": "m2", "messages": MSG})
    body = json.dumps(r.json())
    assert r.status_code in (200, 502)
    if r.status_code == 502:
        assert "127.0.0.1" not in body and "stub failure" not in body
    # the answering fallback (m1/m0) hides the failure; the log keeps the detail
    row = keyed.row(r.headers["x-request-id"])
    assert row["fallbacks"][0]["model"] == "m2" and "500" in row["fallbacks"][0]["error"]


def test_every_model_failing_tells_what_not_where(stub, gateway):
    gw = gateway(stub.url, ("fail", "fail"), label="allfail")
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "tierwise", "messages": MSG}, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 502 and "HTTP 500" in err["message"]
    assert "stub failure" not in err["message"] and stub.url.split("/v1")[0] not in err["message"]
    assert "x-tierwise-model" not in r.headers and r.headers["x-tierwise-fallbacks"] == "m0,m1"  # no model answered


def test_coercion_and_bad_knobs_are_refused(keyed):
    for body, status in (({"model": "m0", "messages": MSG, "max_tokens": "10"}, 422),
                         ({"model": "m0", "messages": MSG, "stream": "yes"}, 422),
                         ({"model": "tierwise:nan", "messages": MSG}, 400),
                         ({"model": "tierwise:quality=2", "messages": MSG}, 400),
                         ({"model": "x" * 4_000_000, "messages": MSG}, 422),
                         ({"model": "m" * 300, "messages": MSG}, 422)):
        r = _post(keyed, ALICE, body)
        assert r.status_code == status and "Traceback" not in r.text, (body.get("model", "")[:20], r.text[:200])
    r = httpx.post(keyed.url + "/v1/chat/completions", content=json.dumps({"model": "m0", "messages": MSG}),
                   headers={"authorization": f"Bearer {ALICE}", "content-type": "text/plain"})
    assert r.status_code == 415


_LONE = "cut \\ud83d in half"  # a JSON escape of half a surrogate pair: valid JSON, not Unicode text
_DEEP = "[" * 5000 + "]" * 5000  # past the JSON parser's recursion limit
_SURFACES = {
    "/v1/chat/completions": '{"model": "m0", "messages": [{"role": "user", "content": "%s"}], "metadata": %s}',
    "/v1/messages": '{"model": "m0", "max_tokens": 3, "messages": [{"role": "user", "content": "%s"}], "metadata": %s}',
    "/v1/messages/count_tokens": '{"model": "m0", "messages": [{"role": "user", "content": "%s"}], "metadata": %s}',
    "/v1/responses": '{"model": "m0", "input": "%s", "metadata": %s}',
    "/v1/completions": '{"model": "m0", "prompt": "%s", "metadata": %s}',
}


@pytest.mark.parametrize("path", list(_SURFACES))
@pytest.mark.parametrize("case", ["lone surrogate", "deep nesting"])
def test_unreadable_json_is_the_clients_400_on_every_surface(keyed, path, case):
    """A lone surrogate used to reach the models and fail in every tokenizer, as a *backend* error (502,
    and every circuit breaker a step nearer open); nesting past the parser's limit was an unhandled 500."""
    text, meta = (_LONE, "{}") if case == "lone surrogate" else ("hi", _DEEP)
    r = httpx.post(keyed.url + path, content=(_SURFACES[path] % (text, meta)).encode(),
                   headers={"authorization": f"Bearer {ALICE}", "content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text[:300]
    body = r.json()
    if path.startswith("/v1/messages"):  # Anthropic's shape there
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
    else:
        assert body["error"]["code"] == "invalid_json"
        message = body["error"]["message"]
    assert ("surrogate" in message) if case == "lone surrogate" else ("nests too deeply" in message), message
    breakers = httpx.get(keyed.url + "/health", timeout=10).json()["breakers"]
    assert all(b["state"] != "open" for b in breakers.values()), breakers


def test_surrogate_pairs_still_pass(keyed):
    body = '{"model": "m0", "messages": [{"role": "user", "content": "emoji \\ud83d\\ude00 ok"}]}'
    r = httpx.post(keyed.url + "/v1/chat/completions", content=body.encode(),
                   headers={"authorization": f"Bearer {ALICE}", "content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize("keys", ["api_keys: []", 'api_keys: [""]', "admin_keys: ['  ']",
                                  "api_keys_env: TW_EMPTY_KEYS"])
def test_auth_never_turns_off_silently(stub, tmp_path, keys):
    cfg = write_pyramid(tmp_path / "p.yaml", stub.url, str(tmp_path / "log.sqlite"), modes=("echo",),
                        extra=keys + "\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    p = subprocess.run([sys.executable, "-c", "from tierwise.cli import main; main()", "serve", "--config", str(cfg),
                        "--port", "9"], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "TW_EMPTY_KEYS": " , "})
    assert p.returncode == 2, p.stderr
    assert "key" in p.stderr and "Traceback" not in p.stderr


def test_log_off_answers_and_says_feedback_needs_a_log(stub, tmp_path):
    from starlette.testclient import TestClient

    from tierwise.config import Pyramid
    from tierwise.gateway import create_app

    cfg = write_pyramid(tmp_path / "p.yaml", stub.url, "off", modes=("echo",))
    with TestClient(create_app(Pyramid.load(cfg))) as c:
        r = c.post("/v1/chat/completions", json={"model": "m0", "messages": MSG})
        assert r.status_code == 200 and r.headers["x-request-id"]
        fb = c.post("/v1/feedback", json={"request_id": r.headers["x-request-id"], "score": 1})
        assert fb.status_code == 503 and "log: off" in fb.json()["error"]["message"]
        assert c.get("/health").json()["log_health"]["off"] is True
    assert not (tmp_path / "off").exists()
