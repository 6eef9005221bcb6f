"""Collect an outcome table on the user's own pyramid: every model answers every prompt, graded.

This is how a user without outcome data gets some: the resulting wide table (``correct|m``,
``cost|m``, ``tokens_in|m``, ``tokens_out|m``, ``latency_s|m``, ``logprob|m``, ``pred|m``) feeds
``tierwise train`` / ``eval`` and the cascade's threshold calibration.

Runs take hours on a CPU, so they must survive interruption: every finished cell is committed to a
SQLite sidecar (``<out>.cells.sqlite``) the moment it is graded; a rerun of the same command skips
finished cells, and the wide table is (re)written atomically at the end. The pieces:

* ``spec``: the pyramid's chat models as collect sees them (name, identity, prices, backend);
* ``store``: the cell store; ``cells``: one cell (query, retry, grade) and the run's plan;
* ``run``: ``run_collect``, the driver: plan, runner, commit each cell, progress, table, report;
* ``runner_local``: models one after another in this process (the default);
* ``runner_ray`` (+ ``ray_pool``, ``ray_worker``): every model at once on a Ray cluster, one actor
  pool per model, dead workers' cells sent again;
* ``table_writer``: the wide table, byte-identical for the same cells; ``report``: the run's
  counts and ``summary`` (``python -m tierwise.collection summary TABLE``).
"""

from .cells import Plan, run_cell
from .report import CollectReport, summary
from .run import run_collect
from .spec import CollectError, ModelSpec, model_identity, specs_from_pyramid
from .store import Cell, CellStore, sidecar_path
from .table_writer import build_frame, merge_tables, write_frame, write_table

__all__ = [
    "Cell", "CellStore", "CollectError", "CollectReport", "ModelSpec", "Plan", "build_frame", "merge_tables",
    "model_identity", "run_cell", "run_collect", "sidecar_path", "specs_from_pyramid", "summary",
    "write_frame", "write_table",
]
