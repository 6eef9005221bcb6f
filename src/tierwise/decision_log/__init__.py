"""Decision log: one row per gateway request, plus user feedback, in SQLite (default) or Postgres.

- :mod:`.log`: the writer (a background thread that batches rows; never blocks a request), feedback and
  stored Responses turns, and :class:`NullLog` for ``log: off``;
- :mod:`.dialect`: the tables, their migration, and the SQLite/Postgres differences (shared with the
  dashboard and the key store);
- :mod:`.summary`: what ``tierwise stats`` (and the dashboard's overview) computes from the rows.
"""

from ..engine.record import RequestRecord, prompt_hash
from ..errors import LogError
from .log import OFF, DecisionLog, NullLog, open_log
from .summary import summarize

__all__ = ["DecisionLog", "LogError", "NullLog", "OFF", "RequestRecord", "open_log", "prompt_hash", "summarize"]
