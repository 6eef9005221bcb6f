"""The dashboard's test fixtures, shared by tests/test_dashboard*.py, bench/dashboard_bench.py and
scripts/dashboard_screenshots.py: a decision log filled with synthetic traffic (:mod:`.traffic`), a
pyramid YAML with the same models and prices, and a uvicorn server in a thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .gateway import free_port
from .traffic import DEMO_TIERS, Mix, Tier, synthetic_feedback, synthetic_requests

__all__ = ["DemoLog", "fill_log", "write_demo_pyramid", "Server", "KEYS"]

# client keys of the demo log (the keys themselves: tests sign in with them)
KEYS = ("sk-demo-alpha", "sk-demo-beta", "sk-demo-gamma")


@dataclass
class DemoLog:
    url: str
    records: list[Any] = field(default_factory=list)
    feedback: list[tuple[str, float]] = field(default_factory=list)

    def rows_of(self, key_hash: str | None) -> list[Any]:
        return [r for r in self.records if r.key_hash == key_hash]


def fill_log(url: str | Path, n: int, *, start: float | None = None, end: float | None = None,
             tiers: Sequence[Tier] = DEMO_TIERS, keys: Sequence[str] = KEYS, seed: int = 0, knob: float = 0.4,
             feedback_share: float = 0.15, mix: Mix = Mix(), prompts: bool = True) -> DemoLog:
    """``n`` synthetic requests (over the last 24 h unless given) by ``keys``, through
    ``DecisionLog.record`` and ``add_feedback``, as the gateway writes them."""
    from ..decision_log import DecisionLog
    from ..gateway.guard import key_hash

    end = time.time() if end is None else end
    start = end - 86400 if start is None else start
    hashes = [key_hash(k) for k in keys] or [None]
    log = DecisionLog(str(url), store_prompts=prompts)
    demo = DemoLog(log.url)
    try:
        for rec in synthetic_requests(n, tiers, start=start, end=end, knob=knob, keys=hashes, seed=seed, mix=mix,
                                      prompts=prompts):
            log.record(rec)
            demo.records.append(rec)
        log.flush()
        demo.feedback = synthetic_feedback(demo.records, feedback_share, seed=seed + 1)
        futures = [log.add_feedback(rid, score) for rid, score in demo.feedback]
        assert all(f.result(30) for f in futures)
    finally:
        log.close()
    return demo


def write_demo_pyramid(path: Path, log: str, *, tiers: Sequence[Tier] = DEMO_TIERS, admin_keys: Sequence[str] = (),
                       api_keys: Sequence[str] = (), knob: float | None = 0.4) -> Path:
    """A pyramid YAML with ``tiers``' names and prices (stub endpoints: nothing is started)."""
    lines = ["models:"]
    for t in tiers:
        lines += [f"  - name: {t.name}", "    backend: openai", "    endpoint: http://127.0.0.1:9/v1",
                  f"    model: {t.name}", f"    input_per_1m: {t.input_per_1m}", f"    output_per_1m: {t.output_per_1m}"]
    lines.append(f"log: {log}")
    if knob is not None:
        lines.append(f"knob: {knob}")
    if api_keys:
        lines.append("api_keys: [" + ", ".join(api_keys) + "]")
    if admin_keys:
        lines.append("admin_keys: [" + ", ".join(admin_keys) + "]")
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    """An ASGI app on a free loopback port, served by uvicorn in a thread (``with Server(app) as s``)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                     access_log=False, lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, name="tierwise-test-server", daemon=True)

    def __enter__(self) -> "Server":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(15)
