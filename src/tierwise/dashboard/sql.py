"""How the dashboard reads the decision log: read-only connections (one per thread), the few SQL
fragments that differ between SQLite and Postgres, and the :class:`Scope` every query is filtered
by (a time range, and a client key unless the viewer is an admin).

Queries are written once with ``?`` placeholders (turned into ``%s`` for Postgres) and return
plain tuples; nothing here loads the log: the callers aggregate in SQL and read a handful of rows.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ..decision_log.dialect import Dialect

__all__ = ["Reader", "Scope", "FORWARDED", "answered", "routed", "time_index", "is_small", "SMALL_RANGE"]

# requests to these endpoints are forwarded to one named model, never routed (summarize() leaves
# them out of the savings baseline)
FORWARDED = ("embeddings", "completions")
# below this many requests in range, reading them by time beats walking the big covering indexes
SMALL_RANGE = 50_000


def answered(alias: str = "") -> str:
    """``summarize()``'s answered requests: status 200 and a model."""
    p = f"{alias}." if alias else ""
    return f"{p}status = 200 AND {p}model IS NOT NULL AND {p}model <> ''"


def routed(alias: str = "") -> str:
    """Answered requests to a routed API (what the savings baseline re-prices)."""
    p = f"{alias}." if alias else ""
    forwarded = ", ".join(f"'{f}'" for f in FORWARDED)
    return f"{answered(alias)} AND COALESCE({p}surface, 'chat') NOT IN ({forwarded})"


@dataclass(frozen=True)
class Scope:
    """Which requests a query sees: ``t0 <= ts < t1`` and, for a client key, only its own."""

    t0: float
    t1: float
    key_hash: str | None = None

    def where(self, alias: str = "") -> tuple[str, list[Any]]:
        p = f"{alias}." if alias else ""
        sql, params = f"{p}ts >= ? AND {p}ts < ?", [self.t0, self.t1]
        if self.key_hash is not None:
            sql += f" AND {p}key_hash = ?"
            params.append(self.key_hash)
        return sql, params


def time_index(scope: Scope) -> str:
    """The index that reads a range by time (a client key's own, or everyone's)."""
    return "requests_key_ts" if scope.key_hash is not None else "requests_ts"


def is_small(reader: "Reader", scope: Scope) -> bool:
    """Fewer than ``SMALL_RANGE`` requests in scope (counts at most that many index entries)."""
    where, params = scope.where()
    sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM requests{reader.index(time_index(scope))} WHERE {where} LIMIT ?) t"
    return int(reader.query(sql, [*params, SMALL_RANGE])[0][0]) < SMALL_RANGE


class Reader:
    """Read-only access to one decision log (``DecisionLog.url``: a SQLite path or postgres URL)."""

    def __init__(self, url: str):
        self.url = url
        self._dialect = Dialect(url)
        self.postgres = self._dialect.postgres
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._generation = 0  # bumped by close(): every thread's connection is then reopened on use

    # -- connections ----------------------------------------------------------------------------

    def _connection(self):
        con = getattr(self._local, "con", None)
        if getattr(self._local, "generation", None) != self._generation:  # closed since: start afresh
            con = None
        if con is None:
            con = self._dialect.connect()
            if self.postgres:
                con.autocommit = True  # every query sees the latest commits (no long-held snapshot)
                con.execute("SET default_transaction_read_only = on")
            else:
                for pragma in ("query_only = ON", "mmap_size = 268435456", "cache_size = -65536",
                               "temp_store = MEMORY"):
                    con.execute(f"PRAGMA {pragma}")
            self._local.con, self._local.generation = con, self._generation
            with self._lock:
                self._all.append(con)
        return con

    def _drop(self) -> None:
        con = getattr(self._local, "con", None)
        self._local.con = None
        if con is not None:
            with self._lock:
                if con in self._all:
                    self._all.remove(con)
            try:
                con.close()
            except Exception:
                pass

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """The queries inside see one state of the log (a read transaction), so counts read by one
        query and the ranks another walks agree even while the gateway writes."""
        con = self._connection()
        self._local.snapshot = True
        try:
            if self.postgres:
                with con.transaction():
                    con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    yield
            else:
                con.execute("BEGIN")
                try:
                    yield
                finally:
                    con.execute("COMMIT")
        except Exception:
            self._drop()
            raise
        finally:
            self._local.snapshot = False

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """All result rows (meant for aggregates: a few rows). Outside a snapshot, a dropped
        connection is reopened once."""
        retry = not getattr(self._local, "snapshot", False)
        for attempt in (0, 1):
            try:
                cur = self._connection().cursor()
                cur.execute(self._sql(sql), tuple(params))
                return list(cur.fetchall())
            except Exception:
                if not retry or attempt:
                    raise
                self._drop()
        raise AssertionError("unreachable")

    def chunks(self, sql: str, params: Iterable[Any] = (), size: int = 50_000) -> Iterator[list[tuple]]:
        """The result in chunks of ``size`` rows (for the what-if's one pass over numeric columns)."""
        cur = self._connection().cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            while rows := cur.fetchmany(size):
                yield rows
        except Exception:
            self._drop()
            raise
        finally:
            try:
                cur.close()
            except Exception:
                pass

    def close(self) -> None:
        """Close every connection (the reader stays usable: threads reconnect on their next query)."""
        with self._lock:
            cons, self._all = self._all, []
            self._generation += 1
        for con in cons:
            try:
                con.close()
            except Exception:
                pass

    def distinct(self, column: str) -> list[Any]:
        """The distinct non-empty values of an indexed ``requests`` column, by a loose index scan
        (one index seek per value, not a scan of the table)."""
        sql = (f"WITH RECURSIVE d(v) AS (SELECT MIN({column}) FROM requests WHERE {column} > '' UNION ALL "
               f"SELECT (SELECT MIN({column}) FROM requests WHERE {column} > d.v) FROM d WHERE d.v IS NOT NULL) "
               "SELECT v FROM d WHERE v IS NOT NULL")
        return [r[0] for r in self.query(sql)]

    # -- SQL fragments that differ between the two databases ---------------------------------------

    def index(self, name: str) -> str:
        """SQLite's planner guesses without statistics: name the index a query was written to walk."""
        return "" if self.postgres else f" INDEXED BY {name}"

    def json_number(self, column: str, key_sql: str) -> str:
        """The number under the key ``key_sql`` (an SQL expression) of a JSON object column."""
        if self.postgres:
            return f"CAST(({column}::json ->> CAST({key_sql} AS TEXT)) AS DOUBLE PRECISION)"
        return f"json_extract({column}, '$.\"' || {key_sql} || '\"')"

    def json_length(self, column: str) -> str:
        return f"json_array_length({column}::json)" if self.postgres else f"json_array_length({column})"

    def json_elements(self, column: str, alias: str) -> str:
        """A FROM item: the elements of a JSON array column, as ``alias.value`` in order ``alias.key``."""
        if self.postgres:
            return f"json_array_elements({column}::json) WITH ORDINALITY AS {alias}(value, key)"
        return f"json_each({column}) AS {alias}"

    def json_object_values(self, column: str, alias: str) -> str:
        """A FROM item: the values of a JSON object column of numbers, as ``alias.value``."""
        if self.postgres:
            return f"json_each_text({column}::json) AS {alias}(key, value)"
        return f"json_each({column}) {alias}"

    def element(self, alias: str, field: str, number: bool = False) -> str:
        """A field of a JSON array element from :meth:`json_elements` (text, or a number)."""
        if self.postgres:
            text = f"({alias}.value ->> '{field}')"
            return f"CAST({text} AS DOUBLE PRECISION)" if number else text
        return f"json_extract({alias}.value, '$.{field}')"

    def last_element(self, column: str, field: str, number: bool = False) -> str:
        """A field of the last element of a JSON array column (no per-row table function)."""
        if self.postgres:
            text = f"({column}::json -> -1 ->> '{field}')"
            return f"CAST({text} AS DOUBLE PRECISION)" if number else text
        return f"json_extract({column}, '$[#-1].{field}')"

    def no_inline(self) -> str:
        """Ends a subquery so the planner computes it once instead of inlining its expressions."""
        return "OFFSET 0" if self.postgres else "LIMIT -1 OFFSET 0"

    def number(self, expr: str) -> str:
        """A JSON scalar from :meth:`json_object_values` as a number."""
        return f"CAST({expr} AS DOUBLE PRECISION)" if self.postgres else expr

    def floor(self, expr: str) -> str:
        """``expr`` rounded down to an integer (SQLite's CAST truncates, which is floor for the
        non-negative values it is used on; Postgres's CAST would round)."""
        return f"FLOOR({expr})" if self.postgres else f"CAST({expr} AS INTEGER)"
