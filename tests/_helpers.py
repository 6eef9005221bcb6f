"""Helpers shared by the gateway tests (``test_server.py``, ``test_server_cascade.py``)."""

from __future__ import annotations

import time
from pathlib import Path


def prices_of(cfg: Path) -> dict[str, tuple[float, float]]:
    """Each model's (input, output) price per 1M tokens in the pyramid YAML ``cfg``."""
    from tierwise.config import Pyramid

    return {m.name: (m.input_per_1m, m.output_per_1m) for m in Pyramid.load(cfg).models}


def log_rows(path: Path, want: int | None = None, timeout: float = 10.0) -> list[dict]:
    """Rows as another process sees them (the writer batches, so wait briefly for ``want``)."""
    from tierwise.decision_log import DecisionLog

    deadline = time.monotonic() + timeout
    while True:
        rows = DecisionLog(path).rows()
        if want is None or len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def log_row(path: Path, rid: str, timeout: float = 10.0) -> dict:
    """The decision-log row of request ``rid``, waiting up to ``timeout`` for the writer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in log_rows(path):
            if r["id"] == rid:
                return r
        time.sleep(0.05)
    raise AssertionError(f"request {rid} not in the decision log")
