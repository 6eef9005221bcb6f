"""Gateway overhead and concurrency bench, on loopback only.

1. Overhead: the same chat request sent straight to a fast local OpenAI-compatible backend and
   through ``tierwise serve`` (routed with ``model="tierwise"``, stand-in router); the difference of
   p50/p99 latencies is what the gateway adds (HTTP hop + parse + route + log).
2. Load: 32 concurrent clients through the gateway, bounded in requests and time; reports errors,
   throughput, latency, and checks that the decision log has exactly one row per request.

The backend is a stub written on raw asyncio (answers in microseconds), so model time does not
hide gateway time. Run: ``python bench/gateway_bench.py [--requests 400] [--clients 32]``.
Tests import ``StubBackend`` from here for fault injection (500s, stalls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class StubBackend:
    """A tiny OpenAI-compatible HTTP/1.1 server in a background thread.

    What it does is chosen by the request's ``model`` field (the backend's remote model id):
    ``echo`` answers "echo: <last user message>"; ``fail`` answers HTTP 500; ``stall`` never
    answers; ``stall-after-first`` streams one token then stalls; ``slow-<ms>`` waits then answers.
    ``confident`` / ``unsure`` answer like ``echo`` and, when the request asks for ``logprobs``, add
    OpenAI's ``logprobs.content`` with -0.05 / -3.0 per token (one token per word), in the body or
    in each streamed chunk, so the cascade's confidence can be driven from tests.
    It counts requests per mode so tests can check who was called.
    """

    LOGPROB = {"confident": -0.05, "unsure": -3.0}

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = 0
        self.port_wanted = port
        self.calls: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stub-backend")
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "StubBackend":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> "StubBackend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port_wanted, backlog=256)
            self.port = self._server.sockets[0].getsockname()[1]

        self._loop.run_until_complete(boot())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                body = json.loads(await reader.readexactly(length)) if length else {}
                await self._answer(body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, body: dict, writer: asyncio.StreamWriter) -> None:
        mode = str(body.get("model", "echo"))
        self.calls[mode] = self.calls.get(mode, 0) + 1
        msgs = body.get("messages") or [{}]
        user = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"), "")
        text = f"echo: {user}"
        if mode == "fail":
            payload = b'{"error":{"message":"stub failure","type":"server_error"}}'
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()
            return
        if mode == "stall":
            await asyncio.sleep(3600)
        if mode.startswith("slow-"):
            await asyncio.sleep(int(mode[5:]) / 1000)
        tin, tout = max(1, len(str(msgs)) // 4), max(1, len(text) // 4)
        lp = self.LOGPROB.get(mode) if body.get("logprobs") else None

        def logprobs(pieces: list[str]) -> dict | None:
            if lp is None:
                return None
            tops = int(body.get("top_logprobs") or 0)
            return {"content": [{"token": p, "logprob": lp, "bytes": list(p.encode()),
                                 "top_logprobs": [{"token": p, "logprob": lp, "bytes": list(p.encode())}][:tops]}
                                for p in pieces]}

        pieces = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
        if body.get("stream"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

            def event(obj: dict | str) -> bytes:
                data = b"data: " + (obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()) + b"\n\n"
                return b"%x\r\n%s\r\n" % (len(data), data)

            for piece in pieces:
                writer.write(event({"object": "chat.completion.chunk", "choices": [
                    {"index": 0, "delta": {"content": piece}, "logprobs": logprobs([piece]), "finish_reason": None}]}))
                await writer.drain()
                if mode == "stall-after-first":
                    await asyncio.sleep(3600)
            writer.write(event({"object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            writer.write(event({"object": "chat.completion.chunk", "choices": [],
                                "usage": {"prompt_tokens": tin, "completion_tokens": tout}}))
            writer.write(event("[DONE]") + b"0\r\n\r\n")
            await writer.drain()
            return
        payload = json.dumps({
            "id": "stub", "object": "chat.completion", "model": mode,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs(pieces),
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
        }).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(payload), payload))
        await writer.drain()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pyramid(path: Path, backend_url: str, log: str, modes: tuple[str, ...] = ("echo", "echo", "echo"),
                  extra: str = "", timeout_s: float = 10.0, names: list[str] | None = None) -> Path:
    """A pyramid of ``len(modes)`` stub-backed models, cheapest first (names m0, m1, ... unless given)."""
    lines = ["models:"]
    for i, mode in enumerate(modes):
        name = names[i] if names else f"m{i}"
        lines += [f"  - name: {name}", "    backend: openai", f"    endpoint: {backend_url}", f"    model: {mode}",
                  f"    input_per_1m: {0.1 * 10 ** i:g}", f"    output_per_1m: {0.2 * 10 ** i:g}",
                  "    context_window: 8192", f"    timeout_s: {timeout_s}", "    max_concurrency: 64"]
    lines.append(f"log: {log}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def start_gateway(config: Path, port: int, *extra_args: str, env: dict | None = None) -> subprocess.Popen:
    """``tierwise serve`` as a real process; returns once /health answers."""
    import httpx

    src = str(Path(__file__).resolve().parents[1] / "src")
    e = {**os.environ, **(env or {})}
    e["PYTHONPATH"] = src + os.pathsep + e.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tierwise.cli import app; app()", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port), *extra_args],
        env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 120
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
    raise RuntimeError("tierwise serve did not become healthy within 120 s")


def stop_gateway(proc: subprocess.Popen) -> str:
    """SIGTERM (graceful: flushes the log), then the process output."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), to separate work from waiting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:g} s")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _timed_posts(url: str, body: dict, n: int, warmup: int = 30) -> list[float]:
    import httpx

    out = []
    with httpx.Client(timeout=10) as c:
        for i in range(n + warmup):
            t = time.perf_counter()
            r = c.post(url, json=body)
            dt = time.perf_counter() - t
            r.raise_for_status()
            if i >= warmup:
                out.append(dt * 1000)
    return out


async def _load(url: str, clients: int, total: int, deadline_s: float) -> tuple[list[float], list[str]]:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    sent = 0
    stop_at = time.monotonic() + deadline_s

    async def client(i: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(timeout=30) as c:
            while sent < total and time.monotonic() < stop_at:
                sent += 1
                body = {"model": "tierwise", "messages": [{"role": "user", "content": f"client {i} question {sent}"}],
                        "max_tokens": 16, "stream": sent % 2 == 0}
                t = time.perf_counter()
                try:
                    r = await c.post(url, json=body)
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                    elif body["stream"] and not r.text.rstrip().endswith("data: [DONE]"):
                        errors.append("stream did not end with [DONE]")
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                lat.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return lat, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="sequential requests per overhead series")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--load-requests", type=int, default=640, help="total requests of the concurrency run")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time bound of the concurrency run")
    ap.add_argument("--router", default="stand-in",
                    help="'stand-in' (untrained heuristic), 'default' (the shipped router of the embedded pyramid; "
                         "the stub models then take its model names), or a router artifact path")
    ap.add_argument("--stub-port", type=int, help=argparse.SUPPRESS)  # internal: run only the stub backend
    args = ap.parse_args()
    if args.stub_port:
        stub = StubBackend(port=args.stub_port)
        stub.start()
        stub._thread.join()
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tierwise.decision_log import DecisionLog

    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "log.sqlite")
        # the stub runs in its own process: in this one it would compete with the client for the GIL
        stub_port = free_port()
        stub_proc = subprocess.Popen([sys.executable, __file__, "--stub-port", str(stub_port)])
        stub_url = f"http://127.0.0.1:{stub_port}/v1"
        _wait_port(stub_port)
        names, extra = None, ""
        if args.router != "stand-in":
            from tierwise.config import default_router_path
            from tierwise.router import Router

            router_path = default_router_path() if args.router == "default" else Path(args.router).resolve()
            names = Router.load(router_path).models
            extra = f"router: {router_path}\n"
        cfg = write_pyramid(Path(tmp) / "pyramid.yaml", stub_url, log, modes=("echo",) * (len(names) if names else 3),
                            names=names, extra=extra)
        print(f"router: {args.router}{' (' + ', '.join(names) + ')' if names else ''}")
        port = free_port()
        proc = start_gateway(cfg, port)
        try:
            body = {"messages": [{"role": "user", "content": "What is 2 + 2? Answer briefly."}], "max_tokens": 16}
            direct = _timed_posts(stub_url + "/chat/completions", {**body, "model": "echo"}, args.requests)
            cpu0 = _cpu_s(proc.pid)
            routed = _timed_posts(f"http://127.0.0.1:{port}/v1/chat/completions", {**body, "model": "tierwise"},
                                  args.requests)
            cpu1 = _cpu_s(proc.pid)
            named = _timed_posts(f"http://127.0.0.1:{port}/v1/chat/completions", {**body, "model": (names or ["m0"])[0]},
                                 args.requests)
            cpu2 = _cpu_s(proc.pid)
            t0 = time.perf_counter()
            cpu3 = _cpu_s(proc.pid)
            lat, errors = asyncio.run(_load(f"http://127.0.0.1:{port}/v1/chat/completions", args.clients,
                                            args.load_requests, args.max_seconds))
            wall = time.perf_counter() - t0
            load_cpu = _cpu_s(proc.pid) - cpu3
        finally:
            out = stop_gateway(proc)
            stub_proc.terminate()
            stub_proc.wait(10)
        rows = DecisionLog(log).count()
    d50, d99 = _pct(direct, 0.5), _pct(direct, 0.99)
    print(f"direct backend      p50 {d50:6.2f} ms  p99 {d99:6.2f} ms  (n={len(direct)})")
    for label, xs in (("gateway tierwise", routed), ("gateway direct name", named)):
        print(f"{label:<19} p50 {_pct(xs, 0.5):6.2f} ms  p99 {_pct(xs, 0.99):6.2f} ms  "
              f"overhead p50 {_pct(xs, 0.5) - d50:+.2f} ms  p99 {_pct(xs, 0.99) - d99:+.2f} ms")
    n = args.requests + 30
    print(f"gateway CPU per request (less sensitive to a busy machine): routed {(cpu1 - cpu0) / n * 1000:.2f} ms, "
          f"by name {(cpu2 - cpu1) / n * 1000:.2f} ms")
    print(f"{args.clients} clients: {len(lat)} requests in {wall:.1f} s ({len(lat) / wall:.0f} req/s), "
          f"p50 {_pct(lat, 0.5):.1f} ms p99 {_pct(lat, 0.99):.1f} ms, errors {len(errors)}; "
          f"gateway busy {load_cpu / wall:.0%} of one core ({load_cpu / max(1, len(lat)) * 1000:.2f} ms CPU/request)")
    for e in sorted(set(errors))[:5]:
        print("  error:", e)
    # the direct series is not logged; the two gateway series and the load run are
    logged_expected = 2 * (args.requests + 30) + len(lat)
    print(f"decision log rows {rows} / gateway requests {logged_expected}: "
          f"{'OK' if rows == logged_expected else 'MISMATCH'}")
    if rows != logged_expected or errors:
        print(out[-2000:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
