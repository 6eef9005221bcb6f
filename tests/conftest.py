"""Fixtures shared by the gateway tests.

* ``stub``: one recording OpenAI-compatible stub backend for the session
  (``tierwise.testing.StubBackend``). It is shared, so a test that asserts on what arrived calls
  ``stub.reset()`` first (or uses ``fresh_stub``). Modules that define their own ``stub`` fixture
  keep theirs.
* ``gateway``: a factory starting real ``tierwise serve`` processes on a pyramid of stub-backed
  models (``tierwise.testing.write_pyramid``); every gateway it started is stopped when the module
  ends. Returns a ``tierwise.testing.Gateway`` (``.url``, ``.base_url``, ``.cfg``, ``.log``,
  ``.client()``, ``.rows()``, ``.row(id)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pytest

from tierwise.testing import Gateway, StubBackend, write_pyramid


@pytest.fixture(scope="session")
def stub():
    with StubBackend() as s:
        yield s


@pytest.fixture()
def fresh_stub(stub):
    """The session stub with no calls or requests recorded yet."""
    stub.reset()
    return stub


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Callable[..., Gateway]:
    started: list[Gateway] = []

    def start(backend_url: str, modes: Sequence[str] = ("echo", "echo", "echo"), *,
              names: list[str] | None = None, capabilities: Sequence[Sequence[str] | None] | None = None,
              extra: str = "", timeout_s: float = 10.0, context_window: int = 8192, args: Sequence[str] = (),
              env: dict[str, str] | None = None, label: str = "gw") -> Gateway:
        """``tierwise serve`` on a fresh pyramid of stub-backed models (m0, m1, ... cheapest first)."""
        tmp: Path = tmp_path_factory.mktemp(label)
        log = tmp / "log.sqlite"
        cfg = write_pyramid(tmp / "pyramid.yaml", backend_url, str(log), modes=tuple(modes), extra=extra,
                            timeout_s=timeout_s, names=names, capabilities=capabilities,
                            context_window=context_window)
        gw = Gateway.start(cfg, *args, env=env, log=log)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def small_table():
    """The first 600 fully graded rows of the shipped llmrouter_dc table (9 models): quick to train on."""
    import numpy as np

    from tierwise.table import load_table

    t = load_table(Path(__file__).resolve().parents[1] / "data/outcomes/llmrouter_dc.csv.gz").clean()
    return t.rows(np.arange(600))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throwaway redis-server on a free loopback port (Debian's redis-server; skipped without it)."""
    import shutil
    import socket
    import subprocess
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("no redis-server (apt-get install redis-server)")
    pytest.importorskip("redis", reason="redis client not installed (pip install 'tierwise[redis]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


# -- Postgres: a throwaway server in a temp dir (skips without the binaries or psycopg) ----------


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server from Debian's binaries (skipped without them or psycopg).

    Each user of the shared server should use its own tables or tolerate others' rows."""
    import glob
    import os
    import pwd
    import shutil
    import socket
    import subprocess

    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'tierwise[postgres]')")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    if not initdb:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    bindir = Path(initdb).parent
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="tierwise-pg-"))  # not under pytest's 0700 root-owned tree
    data = tmp / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        shutil.chown(tmp, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "tierwise", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "pg.log"), "-w", "-o",
                    f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://tierwise@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def new_postgres_db(postgres_url):
    """``new_postgres_db(prefix)``: the URL of a fresh, empty database on the throwaway server."""
    import uuid

    import psycopg

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return postgres_url.rsplit("/", 1)[0] + "/" + name

    return make
