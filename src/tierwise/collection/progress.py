"""The collection progress display: a rich bar on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """rich progress bar on a terminal; plain periodic lines otherwise (nohup logs)."""

    def __init__(self, total: int, enabled: bool, *, every_s: float = 30.0):
        self.total, self.done, self.enabled = total, 0, enabled
        self.every_s = every_s
        self.start = time.monotonic()
        self.last_line = 0.0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("collect", total=total)
            self.bar.start()

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)
        elif self.enabled:
            print(f"[collect] {text}", file=sys.stderr, flush=True)

    def advance(self, n: int = 1, *, computed: bool = True) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
            return
        now = time.monotonic()
        if self.enabled and computed and (now - self.last_line > self.every_s or self.done == self.total):
            self.last_line = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"[collect] {self.done}/{self.total} cells, ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
