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
