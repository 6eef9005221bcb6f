"""The local runner: models one after another, cheapest first, in this process.

Up to ``max_concurrency`` requests per model are in flight; on a CPU box several llama.cpp models
at once only fight over the same cores, so models do not overlap (the Ray runner is the way to
spread models and copies over more machines).
"""

from __future__ import annotations

import asyncio

from ..graders import Grader
from .cells import CELL_ERRORS, Sink, Work, failure_text, run_cell


class LocalRunner:
    name = "local"

    async def run(self, work: list[Work], grader: Grader, sink: Sink) -> None:
        for spec, cells in work:
            if not cells:
                continue
            sink.describe(f"{spec.name} ({len(cells)} to run)")
            backend = spec.build()
            sem = asyncio.Semaphore(max(1, spec.max_concurrency))

            async def one(phash: str, item: dict, spec=spec, backend=backend, sem=sem) -> None:
                async with sem:
                    try:
                        cell = await run_cell(backend, grader, item, spec)
                    except CELL_ERRORS as exc:
                        sink.failed(spec, phash, item, failure_text(exc))
                        return
                    sink.done(spec, phash, cell)

            try:
                await asyncio.gather(*(one(h, it) for h, it in cells))
            finally:
                await backend.aclose()
