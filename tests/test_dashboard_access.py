"""Who sees what on the dashboard: without a valid key nothing (401), a client key only its own
requests in every API answer and page, an admin everything; with no keys configured, loopback
clients only (403 otherwise), and the start-up line says so."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from starlette.testclient import TestClient

from tierwise.config import Pyramid
from tierwise.dashboard.access import COOKIE, is_loopback
from tierwise.dashboard.context import from_pyramid
from tierwise.dashboard.standalone import create_app
from tierwise.gateway.guard import key_hash
from tierwise.gateway.keys import Keys
from tierwise.testing.dashboard import KEYS, fill_log, write_demo_pyramid

ADMIN = "sk-demo-admin"
API = ("overview", "quality", "whatif", "decisions")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("access")
    log = fill_log(d / "log.sqlite", 300, seed=5)
    keyed = Pyramid.load(write_demo_pyramid(d / "keyed.yaml", log.url, api_keys=KEYS, admin_keys=[ADMIN]))
    open_ = Pyramid.load(write_demo_pyramid(d / "open.yaml", log.url))
    return log, keyed, open_, d


def _app(log, pyramid):
    return create_app(log.url, from_pyramid(pyramid), Keys(pyramid, log.url))


def _bearer(key):
    return {"authorization": f"Bearer {key}"}


def test_without_a_valid_key_every_page_file_and_api_answer_is_refused(demo):
    log, keyed, _, _ = demo
    with TestClient(_app(log, keyed), client=("127.0.0.1", 40000)) as c:  # loopback does not matter with keys
        for path in [*(f"/dashboard/api/{p}" for p in API), "/dashboard/api/whoami", "/dashboard/api/keys",
                     f"/dashboard/api/decisions/{log.records[0].id}", "/dashboard", "/dashboard/static/app.js"]:
            for headers in ({}, _bearer("sk-wrong"), {"cookie": f"{COOKIE}=forged.1.9999999999.sig"}):
                r = c.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert "Synthetic prompt" not in r.text and "req-" not in r.text
        browser = c.get("/dashboard", headers={"accept": "text/html"}, follow_redirects=False)
        assert browser.status_code == 303 and browser.headers["location"] == "/dashboard/login"
        assert c.post("/dashboard/login", data={"key": "sk-wrong"}).status_code == 401


def _own(log, key):
    return [r for r in log.records if r.key_hash == key_hash(key)]


@pytest.mark.parametrize("how", ["bearer", "cookie"])
def test_a_client_key_sees_only_its_own_requests(demo, how):
    log, keyed, _, _ = demo
    mine, other = KEYS[0], KEYS[1]
    with TestClient(_app(log, keyed)) as c:
        if how == "cookie":
            r = c.post("/dashboard/login", data={"key": mine}, follow_redirects=False)
            assert r.status_code == 303 and COOKIE in r.cookies
            headers = {}
            assert c.get("/dashboard").status_code == 200
        else:
            headers = _bearer(mine)
        own = _own(log, mine)
        for key_param in ("", key_hash(other)):  # asking for another key's rows changes nothing
            q = f"?range=7d&key={key_param}"
            ov = c.get(f"/dashboard/api/overview{q}", headers=headers).json()
            assert ov["stats"]["requests"] == len(own) < len(log.records)
            dec = c.get(f"/dashboard/api/decisions{q}&size=200", headers=headers).json()
            assert dec["total"] == len(own) and {i["key_hash"] for i in dec["items"]} == {key_hash(mine)}
            qual = c.get(f"/dashboard/api/quality{q}", headers=headers).json()
            assert qual["rated"] == sum(1 for rid, _ in log.feedback if rid in {r.id for r in own})
            wi = c.get(f"/dashboard/api/whatif{q}", headers=headers).json()
            assert wi["requests"]["answered"] == sum(1 for r in own if r.status == 200)
        theirs = _own(log, other)[0].id
        assert c.get(f"/dashboard/api/decisions/{theirs}", headers=headers).status_code == 404
        assert c.get(f"/dashboard/api/decisions/{own[0].id}", headers=headers).status_code == 200
        assert c.get("/dashboard/api/keys", headers=headers).json()["keys"] == [{"key_hash": key_hash(mine), "name": None}]
        who = c.get("/dashboard/api/whoami", headers=headers).json()
        assert who["admin"] is False and who["key"] == key_hash(mine)


def test_an_admin_sees_every_key_and_can_narrow_to_one(demo):
    log, keyed, _, _ = demo
    with TestClient(_app(log, keyed)) as c:
        c.post("/dashboard/login", data={"key": ADMIN})
        assert c.get("/dashboard/api/overview?range=7d").json()["stats"]["requests"] == len(log.records)
        one = c.get(f"/dashboard/api/overview?range=7d&key={key_hash(KEYS[2])}").json()
        assert one["stats"]["requests"] == len(_own(log, KEYS[2]))
        keys = {k["key_hash"] for k in c.get("/dashboard/api/keys").json()["keys"]}
        assert keys == {key_hash(k) for k in KEYS}
        theirs = _own(log, KEYS[1])[0].id
        assert c.get(f"/dashboard/api/decisions/{theirs}").status_code == 200
        c.post("/dashboard/logout")
        assert c.get("/dashboard/api/overview").status_code == 401


def test_a_tampered_session_cookie_is_refused(demo):
    log, keyed, _, _ = demo
    with TestClient(_app(log, keyed)) as c:
        c.post("/dashboard/login", data={"key": KEYS[0]})
        genuine = c.cookies[COOKIE]
        c.cookies.clear()
        assert c.get("/dashboard/api/overview", headers={"cookie": f"{COOKIE}={genuine}"}).status_code == 200
        h, admin, expiry, mac = genuine.split(".")
        for forged in (f"{key_hash(ADMIN)}.1.{expiry}.{mac}", f"{h}.1.{expiry}.{mac}", f"{h}.{admin}.{int(expiry) + 99}.{mac}"):
            assert c.get("/dashboard/api/overview", headers={"cookie": f"{COOKIE}={forged}"}).status_code == 401


def test_an_open_dashboard_answers_loopback_clients_only(demo):
    log, _, open_, _ = demo
    app = _app(log, open_)
    with TestClient(app, client=("203.0.113.7", 40000)) as remote:
        for path in ("/dashboard", "/dashboard/api/overview", "/dashboard/static/app.js"):
            assert remote.get(path).status_code == 403
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        assert local.get("/dashboard/api/overview?range=7d").json()["stats"]["requests"] == len(log.records)
        assert local.get("/dashboard").status_code == 200
        # a proxy on this machine forwarding someone else
        assert local.get("/dashboard/api/overview", headers={"x-forwarded-for": "198.51.100.2"}).status_code == 403
        assert local.get("/dashboard/api/overview", headers={"forwarded": 'for="[2001:db8::1]"'}).status_code == 403


def test_the_loopback_check():
    for host in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1", "localhost"):
        assert is_loopback(host), host
    for host in ("10.0.0.1", "192.168.1.5", "::ffff:10.0.0.1", "2001:db8::1", "testclient", "", None):
        assert not is_loopback(host), host


def test_the_gateway_serves_the_dashboard_behind_its_keys(demo):
    from tierwise.gateway import create_app as gateway_app

    log, _, _, d = demo
    # the demo pyramid's models point at a closed port: nothing is called; no knob: the stand-in router's own
    pyramid = Pyramid.load(write_demo_pyramid(d / "gateway.yaml", log.url, api_keys=KEYS, admin_keys=[ADMIN], knob=None))
    app = gateway_app(pyramid)
    with TestClient(app) as c:
        assert c.get("/dashboard/api/overview").status_code == 401
        ov = c.get("/dashboard/api/overview?range=7d", headers=_bearer(ADMIN)).json()
        assert ov["stats"]["requests"] == len(log.records)
        assert set(ov["breakers"]) == {"small-1b", "mid-8b", "large-70b"}  # the gateway knows its breakers
        assert c.get("/dashboard", headers=_bearer(KEYS[0])).status_code == 200


def test_the_start_up_line_says_localhost_only(demo):
    log, _, _, d = demo
    from tierwise.testing import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from tierwise.cli import main; main()", "dashboard", "--log", log.url,
                             "--config", str(d / "open.yaml"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/dashboard" in line and "localhost only" in line, line
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/dashboard/api/overview?range=7d", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.json()["stats"]["requests"] == len(log.records)
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_session_signed_by_one_process_is_accepted_by_every_other_on_the_log(demo, tmp_path):
    """`tierwise serve --workers 2` and replicas: the cookie-signing secret lives in the log, made
    once by whichever process asks first, so a cookie one signs is good at every other."""
    import sqlite3

    log, keyed, _, _ = demo
    with sqlite3.connect(log.url) as con:  # a log made before the secrets table: it is created on demand
        con.execute("DROP TABLE IF EXISTS secrets")
    with TestClient(_app(log, keyed)) as one, TestClient(_app(log, keyed)) as two:
        assert one.post("/dashboard/login", data={"key": KEYS[0]}, follow_redirects=False).status_code == 303
        cookie = {"cookie": f"{COOKIE}={one.cookies[COOKIE]}"}
        for c in (one, two, one, two):
            r = c.get("/dashboard/api/whoami", headers=cookie)
            assert r.status_code == 200 and r.json()["key"] == key_hash(KEYS[0])
    # a restarted process (a new app on the same log) still accepts it; another log's does not
    other = fill_log(tmp_path / "other.sqlite", 5, seed=1)
    with TestClient(_app(log, keyed)) as again, TestClient(_app(other, keyed)) as elsewhere:
        assert again.get("/dashboard/api/whoami", headers=cookie).status_code == 200
        assert elsewhere.get("/dashboard/api/whoami", headers=cookie).status_code == 401


def test_two_worker_processes_share_the_session_secret(demo):
    """Each process makes its Access on its own; both read the one secret stored in the log."""
    log, _, _, _ = demo
    code = ("import sys; from tierwise.dashboard.access import Access; "
            "print(Access(None, sys.argv[1])._secret.hex())")
    secrets_seen = {subprocess.run([sys.executable, "-c", code, log.url], capture_output=True, text=True,
                                   check=True, timeout=60).stdout.strip() for _ in range(2)}
    assert len(secrets_seen) == 1 and len(secrets_seen.pop()) == 64


def test_a_half_sent_sign_in_form_gets_a_408_not_a_hang(demo):
    """Like every other route's body: past the pyramid's body_timeout_s the form is not waited for."""
    import socket

    from tierwise.testing.dashboard import Server

    log, _, _, d = demo
    cfg = write_demo_pyramid(d / "slow.yaml", log.url, api_keys=KEYS)
    cfg.write_text(cfg.read_text() + "body_timeout_s: 1\n")
    pyramid = Pyramid.load(cfg)
    with Server(create_app(log.url, from_pyramid(pyramid), Keys(pyramid, log.url))) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /dashboard/login HTTP/1.1\r\nhost: localhost\r\n"
                      b"content-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\nkey=s")
            t = time.monotonic()
            head = s.recv(65536)
            assert time.monotonic() - t < 8
        assert head.startswith(b"HTTP/1.1 408"), head[:200]


def test_an_open_dashboard_refuses_every_way_a_proxy_names_a_remote_client(demo):
    log, _, open_, _ = demo
    with TestClient(_app(log, open_), client=("127.0.0.1", 40000)) as local:
        for headers in ({"x-real-ip": "198.51.100.2"}, {"X-Real-IP": "2001:db8::1"},
                        {"true-client-ip": "198.51.100.2"}, {"x-forwarded-host": "dash.example.com"},
                        {"forwarded": "for=127.0.0.1;proto=https, for=198.51.100.2"},
                        {"forwarded": "for=127.0.0.1;host=dash.example.com"},
                        {"x-forwarded-for": "127.0.0.1:5000, 198.51.100.2:4000"}):
            assert local.get("/dashboard/api/whoami", headers=headers).status_code == 403, headers
        for headers in ({"x-real-ip": "127.0.0.1"}, {"x-forwarded-host": "localhost:8000"},
                        {"forwarded": 'for="[::1]:5000";host=127.0.0.1:8000'}, {"x-forwarded-proto": "http"}):
            assert local.get("/dashboard/api/whoami", headers=headers).status_code == 200, headers


def test_sign_in_holds_across_the_workers_of_tierwise_serve(stub, gateway):
    """`tierwise serve --workers 2`: whichever worker signed the cookie, every worker accepts it
    (it was refused by the other worker about half the time: 401 200 401 200 ...)."""
    import httpx

    gw = gateway(stub.url, args=("--workers", "2"), extra=f"api_keys: [{KEYS[0]}]\n", label="workers")
    statuses = []
    for _ in range(4):  # a new connection each time: the kernel spreads them over the workers
        signed = httpx.post(gw.url + "/dashboard/login", data={"key": KEYS[0]}, timeout=30)
        assert signed.status_code == 303
        cookie = {"cookie": f"{COOKIE}={signed.cookies[COOKIE]}"}
        statuses += [httpx.get(gw.url + "/dashboard/api/whoami", headers=cookie, timeout=30).status_code
                     for _ in range(6)]
    assert statuses == [200] * len(statuses)
