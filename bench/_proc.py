"""Process facts the benches read from Linux /proc: CPU seconds and RSS of a process and its
descendants (a gateway's workers, router processes), and waiting for a port to listen."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (a gateway's workers and their router processes)."""
    try:
        kids = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [p for k in kids for p in (k, *children(k))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (to separate work from waiting)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its children, kB."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:g} s")
