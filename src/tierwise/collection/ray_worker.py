"""The Ray actor behind one model's pool: loads the model once, answers and grades cells where it runs.

The class is plain Python (``ray.remote`` is applied by the runner), so importing this module
never needs Ray. Workers must import the same tierwise as the driver: :func:`code_fingerprint`
hashes the code that decides a cell's key and grade, and the driver refuses workers whose
fingerprint differs (a stale install on a cluster node would otherwise grade differently).
"""

from __future__ import annotations

import hashlib
import os
from importlib import import_module

from ..graders import Grader
from .cells import CELL_ERRORS, failure_text, run_cell
from .spec import ModelSpec
from .store import Cell

# the modules whose code decides what a cell is and how it is graded
_FINGERPRINTED = ("tierwise.graders", "tierwise.hashing", "tierwise.promptsets", "tierwise.prices",
                  "tierwise.collection.cells")


def code_fingerprint() -> str:
    h = hashlib.sha256()
    for name in _FINGERPRINTED:
        with open(import_module(name).__file__ or "", "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


class CellWorker:
    """One model's backend in a Ray worker process; ``run_cell`` is called up to its capacity at once."""

    def __init__(self, spec: ModelSpec, grader: Grader, n_threads: int | None = None):
        self.spec, self.grader = spec, grader
        self.backend = spec.build(n_threads)

    async def ready(self) -> dict:
        """Where this worker runs and which code it runs (called once per start and restart)."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "fingerprint": code_fingerprint()}

    async def run_cell(self, phash: str, item: dict) -> tuple[Cell | None, str | None]:
        """(cell, None) when graded; (None, error) when the backend or grader failed for good."""
        try:
            return await run_cell(self.backend, self.grader, item, self.spec), None
        except CELL_ERRORS as exc:
            return None, failure_text(exc)
