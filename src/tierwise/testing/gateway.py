"""Run a real ``tierwise serve`` process against stub backends (tests and ``bench/gateway_bench.py``).

``write_pyramid`` writes a pyramid YAML of stub-backed models, ``start_gateway`` / ``stop_gateway``
run the gateway as users do (``tierwise serve --config ...`` in a subprocess), and :class:`Gateway`
bundles one running gateway with its config, log and an ``openai`` client. ``log_rows`` /
``log_row`` read the decision log as another process sees it (the writer batches, so they wait).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["Gateway", "free_port", "write_pyramid", "start_gateway", "stop_gateway", "log_rows", "log_row"]

# the folder holding the ``tierwise`` package (src/ in a checkout), put first on the child's PYTHONPATH
_SRC = str(Path(__file__).resolve().parents[2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _yaml_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(str(i) for i in items) + "]"


def write_pyramid(path: Path, backend_url: str, log: str, modes: tuple[str, ...] = ("echo", "echo", "echo"),
                  extra: str = "", timeout_s: float = 10.0, names: list[str] | None = None,
                  capabilities: Sequence[Sequence[str] | None] | None = None,
                  context_window: int = 8192) -> Path:
    """A pyramid of ``len(modes)`` stub-backed models, cheapest first (names m0, m1, ... unless given).

    ``modes[i]`` is model i's remote model id (the stub's mode). ``capabilities[i]``, when given and
    not None, becomes that model's ``capabilities: [...]`` line (``[]`` declares none); None leaves
    the key out, so the backend's defaults apply.
    """
    if capabilities is not None and len(capabilities) != len(modes):
        raise ValueError(f"capabilities has {len(capabilities)} entries for {len(modes)} models")
    lines = ["models:"]
    for i, mode in enumerate(modes):
        name = names[i] if names else f"m{i}"
        lines += [f"  - name: {name}", "    backend: openai", f"    endpoint: {backend_url}", f"    model: {mode}",
                  f"    input_per_1m: {0.1 * 10 ** i:g}", f"    output_per_1m: {0.2 * 10 ** i:g}",
                  f"    context_window: {context_window}", f"    timeout_s: {timeout_s}", "    max_concurrency: 64"]
        caps = capabilities[i] if capabilities is not None else None
        if caps is not None:
            lines.append(f"    capabilities: {_yaml_list(caps)}")
    lines.append(f"log: {log}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def start_gateway(config: Path, port: int, *extra_args: str, env: dict | None = None,
                  timeout: float = 120.0) -> subprocess.Popen:
    """``tierwise serve`` as a real process; returns once /health answers."""
    import httpx

    e = {**os.environ, **(env or {})}
    e["PYTHONPATH"] = _SRC + os.pathsep + e.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tierwise.cli import main; main()", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port), *extra_args],
        env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tierwise serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    out = proc.communicate()[0] or ""
    raise RuntimeError(f"tierwise serve did not become healthy within {timeout:g} s:\n{out[-4000:]}")


def stop_gateway(proc: subprocess.Popen) -> str:
    """SIGTERM (graceful: flushes the log), then the process output."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def log_rows(path: str | Path, want: int | None = None, timeout: float = 10.0) -> list[dict]:
    """Decision-log rows as another process sees them (the writer batches, so wait briefly for ``want``)."""
    from tierwise.decision_log import DecisionLog

    deadline = time.monotonic() + timeout
    while True:
        url = str(path).startswith(("postgres://", "postgresql://"))
        rows = DecisionLog(path).rows() if url or Path(path).exists() else []
        if want is None or len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def log_row(path: str | Path, rid: str, timeout: float = 10.0) -> dict:
    """The decision-log row of request ``rid``, waiting up to ``timeout`` for the writer."""
    deadline = time.monotonic() + timeout
    while True:
        for r in log_rows(path):
            if rid in (r["id"], r.get("upstream_id")):
                return r
        if time.monotonic() > deadline:
            raise AssertionError(f"request {rid} not in the decision log {path}")
        time.sleep(0.05)


@dataclass
class Gateway:
    """One running ``tierwise serve``: where it listens, its files, and clients for it."""

    port: int
    cfg: Path
    log: Path
    proc: subprocess.Popen | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    output: str = ""
    _clients: list[Any] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @classmethod
    def start(cls, cfg: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None,
              log: Path | None = None) -> "Gateway":
        """Start ``tierwise serve --config cfg``; ``log`` defaults to the ``log:`` line of ``cfg``."""
        if log is None:
            import yaml

            log = Path(str(yaml.safe_load(Path(cfg).read_text()).get("log"))).expanduser()
        gw = cls(port=port or free_port(), cfg=Path(cfg), log=Path(log), args=tuple(args), env=env)
        gw.proc = start_gateway(gw.cfg, gw.port, *args, env=env)
        return gw

    def stop(self) -> str:
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._clients.clear()
        if self.proc is not None:
            self.output += stop_gateway(self.proc)
            self.proc = None
        return self.output

    def restart(self) -> None:
        self.stop()
        self.proc = start_gateway(self.cfg, self.port, *self.args, env=self.env)

    def client(self, api_key: str = "unused", **kw: Any):
        """An ``openai.OpenAI`` client for this gateway (no retries, 30 s timeout unless given)."""
        import openai

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30)
        c = openai.OpenAI(base_url=self.base_url, api_key=api_key, **kw)
        self._clients.append(c)
        return c

    def rows(self, want: int | None = None, timeout: float = 10.0) -> list[dict]:
        return log_rows(self.log, want, timeout)

    def row(self, rid: str, timeout: float = 10.0) -> dict:
        return log_row(self.log, rid, timeout)

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
