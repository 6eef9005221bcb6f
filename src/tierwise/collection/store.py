"""The cell store: finished (prompt, model) cells in a SQLite sidecar, so runs are resumable.

Every finished cell is committed the moment it is graded (WAL, one row per cell), keyed by
(prompt hash, model name, model identity, grader settings). Only the process that drives a run
writes here (the local runner, or the Ray driver as results come back from the workers), so a
crash or kill -9 loses at most the cells in flight, and a rerun of the same command skips the rest.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .spec import CollectError, ModelSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    prompt_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    model_identity TEXT NOT NULL,
    settings TEXT NOT NULL,
    correct REAL NOT NULL,
    cost REAL NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    logprob REAL,
    pred TEXT,
    output TEXT,
    finished_at REAL NOT NULL,
    PRIMARY KEY (prompt_hash, model, model_identity, settings)
);
"""


@dataclass
class Cell:
    """One graded answer: what the wide table records for a (prompt, model) pair."""

    correct: float
    cost: float
    tokens_in: int
    tokens_out: int
    latency_s: float
    logprob: float | None
    pred: str | None
    output: str


class CellStore:
    """Finished cells, committed one by one so a crash loses only what was in flight."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CollectError(f"{self.path}: not a usable cells sidecar ({exc}); delete it to start over") from None

    def done(self, model: ModelSpec, settings: str) -> dict[str, Cell]:
        rows = self.db.execute(
            "SELECT prompt_hash, correct, cost, tokens_in, tokens_out, latency_s, logprob, pred, output "
            "FROM cells WHERE model=? AND model_identity=? AND settings=?",
            (model.name, model.identity, settings),
        ).fetchall()
        return {r[0]: Cell(*r[1:]) for r in rows}

    def put(self, phash: str, model: ModelSpec, settings: str, cell: Cell) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                phash, model.name, model.identity, settings, cell.correct, cell.cost, cell.tokens_in,
                cell.tokens_out, cell.latency_s, cell.logprob, cell.pred, cell.output, time.time(),
            ),
        )

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def sidecar_path(out: str | Path) -> Path:
    return Path(str(out) + ".cells.sqlite")
