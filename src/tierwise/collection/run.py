"""``run_collect``: plan the cells, hand the missing ones to a runner, commit, write, report.

The driver side of every run, whichever runner computes the cells: it alone reads and writes the
cell store (each finished cell is committed as its result arrives), drives the progress display,
and writes the wide table at the end from the store, so a local run and a Ray run of the same cells
give the same file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..graders import Grader
from .cells import Plan, Runner, item_label
from .progress import Progress
from .report import CollectReport, summarise
from .spec import CollectError, ModelSpec
from .store import Cell, CellStore, sidecar_path
from .table_writer import write_table


class _Sink:
    """Commits each outcome a runner reports, counts it, and moves the progress display."""

    def __init__(self, store: CellStore, settings: str, report: CollectReport, bar: Progress,
                 on_cell: Callable[[str, str], None] | None):
        self.store, self.settings, self.report, self.bar, self.on_cell = store, settings, report, bar, on_cell

    def describe(self, text: str) -> None:
        self.bar.describe(text)

    def done(self, spec: ModelSpec, phash: str, cell: Cell) -> None:
        self.store.put(phash, spec, self.settings, cell)
        self.report.computed += 1
        if self.on_cell is not None:
            self.on_cell(spec.name, phash)
        self.bar.advance()

    def failed(self, spec: ModelSpec, phash: str, item: dict, error: str) -> None:
        self.report.failed.append((spec.name, item_label(item, phash), error))
        self.bar.advance()

    def retried(self, spec: ModelSpec, phash: str, reason: str) -> None:
        self.report.retried += 1
        self.bar.describe(f"{spec.name}: a worker died ({reason[:80]}); its cell is sent again")


async def run_collect(
    items: list[dict],
    models: list[ModelSpec],
    grader: Grader,
    out: str | Path,
    *,
    progress: bool = True,
    on_cell: Callable[[str, str], None] | None = None,
    sidecar: str | Path | None = None,
    runner: Runner | None = None,
) -> CollectReport:
    """Run, grade and record every (item, model) cell not already in the sidecar; write the table.

    ``runner`` computes the cells (default: :class:`~.runner_local.LocalRunner`; or
    :class:`~.runner_ray.RayRunner`); ``on_cell(model, prompt_hash)`` is called after each commit.
    """
    plan = Plan.of(items, grader)
    if not models:
        raise CollectError("the pyramid has no models")
    if runner is None:
        from .runner_local import LocalRunner

        runner = LocalRunner()
    out = Path(out)
    started = time.monotonic()
    store = CellStore(sidecar or sidecar_path(out))
    try:
        report = CollectReport(out=out, rows=len(items), models=[m.name for m in models],
                               runner=getattr(runner, "name", type(runner).__name__))
        bar = Progress(len(plan.first) * len(models), progress)
        work = []
        for spec in models:
            todo = plan.todo(store.done(spec, plan.settings))
            report.reused += len(plan.first) - len(todo)
            bar.advance(len(plan.first) - len(todo), computed=False)
            work.append((spec, todo))
        try:
            await runner.run(work, grader, _Sink(store, plan.settings, report, bar, on_cell))
        finally:
            bar.close()
        write_table(items, plan.hashes, models, store, plan.settings, grader.name, out)
    finally:
        store.close()
    report.elapsed_s = time.monotonic() - started
    summarise(report, out)
    return report
