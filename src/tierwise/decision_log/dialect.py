"""The decision log's tables and the few SQL differences between SQLite and Postgres.

Shared by the log's writer (``decision_log.log``), the dashboard's queries and the key store: one
schema, migrated on open, and one way to connect to either database.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from ..engine.record import COLUMNS as _COLUMNS
from ..errors import LogError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    prompt_hash TEXT NOT NULL,
    prompt TEXT,
    requested_model TEXT,
    router TEXT,
    rule TEXT,
    knob DOUBLE PRECISION,
    scores TEXT,
    chosen TEXT,
    model TEXT,
    fallbacks TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    latency_ms DOUBLE PRECISION,
    route_ms DOUBLE PRECISION,
    cost_usd DOUBLE PRECISION,
    status INTEGER NOT NULL,
    error TEXT,
    stream INTEGER,
    cascade_chain TEXT,
    candidates TEXT,
    excluded TEXT,
    needs TEXT,
    upstream_id TEXT,
    usage_estimated INTEGER,
    surface TEXT,
    key_hash TEXT,
    budget_used DOUBLE PRECISION,
    guard TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    score DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    key_hash TEXT,
    messages TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_ts ON responses (ts);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL
)
"""
# secrets: values every process serving this log must share (the dashboard's session-cookie key),
# made once by whichever process asks first (Dialect.shared_secret)

_dump = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _dump_rows(rows: list[tuple], *, keyed: bool) -> str:
    """A batch of rows as one JSON array (of arrays, or of objects keyed by column for Postgres)."""
    return _dump([dict(zip(_COLUMNS, r)) for r in rows] if keyed else rows)


class Dialect:
    """The few SQL differences between SQLite and Postgres."""

    def __init__(self, url: str):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self.ph = "%s" if self.postgres else "?"
        cols = ", ".join(_COLUMNS)
        self._insert_rows = (f"INSERT INTO requests ({cols}) VALUES ({', '.join([self.ph] * len(_COLUMNS))}) "
                             "ON CONFLICT (id) DO NOTHING")
        if self.postgres:
            self._insert_json = (f"INSERT INTO requests ({cols}) SELECT {cols} FROM json_populate_recordset("
                                 "NULL::requests, %s::json) ON CONFLICT (id) DO NOTHING")
        else:  # the SELECT needs its WHERE for SQLite to parse the upsert
            picks = ", ".join(f"value ->> {i}" for i in range(len(_COLUMNS)))
            self._insert_json = (f"INSERT INTO requests ({cols}) SELECT {picks} FROM json_each(?) WHERE true "
                                 "ON CONFLICT (id) DO NOTHING")

    def insert_requests(self, cur, rows: list[tuple]) -> None:
        """Insert request rows (``ON CONFLICT (id) DO NOTHING``) in ONE statement: the batch goes in as
        one JSON array that the database takes apart. The writer is a thread: ``executemany`` gives the
        GIL back for every row and, while the event loop is busy, waits up to a switch interval (5 ms)
        for it again each time; measured: 211 rows/s against a busy loop, vs 18,000 like this."""
        try:
            payload = _dump_rows(rows, keyed=self.postgres)
        except ValueError:  # a NaN/inf that JSON cannot carry: row by row, the slow way
            cur.executemany(self._insert_rows, rows)
            return
        cur.execute(self._insert_json, (payload,))

    def connect(self):
        if self.postgres:
            try:
                import psycopg
            except ImportError:
                raise LogError(
                    f"log {self.url.split('@')[-1]}: a postgres log needs psycopg: pip install 'tierwise[postgres]'"
                ) from None
            try:
                return psycopg.connect(self.url)
            except Exception as exc:
                raise LogError(f"log {self.url.split('@')[-1]}: cannot connect ({exc})") from None
        path = Path(self.url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            con.execute("PRAGMA busy_timeout=30000")
        except (sqlite3.Error, OSError) as exc:
            raise LogError(f"log {path}: cannot open SQLite database ({exc})") from None
        return con

    def file_id(self) -> tuple[int, int] | None:
        """The SQLite file's (device, inode), to notice it being deleted or replaced under us."""
        if self.postgres:
            return None
        try:
            st = os.stat(self.url.removeprefix("sqlite:///"))
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def create(self, con) -> None:
        for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
            con.execute(stmt)
        self._migrate(con)
        covers = {k: "" for k in _SQLITE_COVERS} if self.postgres else _SQLITE_COVERS
        for stmt in filter(None, (s.strip() for s in _INDEXES.format(**covers).split(";"))):  # after the columns
            con.execute(stmt)
        con.commit()

    def shared_secret(self, con, name: str) -> str:
        """The secret ``name`` of this database, made (32 random bytes, hex) by whichever process asks
        first: insert-if-absent, then read, so every worker and replica on the log gets the same one."""
        import secrets
        import time

        ph = self.ph
        select = f"SELECT value FROM secrets WHERE name = {ph}"
        try:  # made already (the common case: no write, so a read-only database user works too)
            row = con.execute(select, (name,)).fetchone()
        except Exception:  # a log made before the table existed
            con.rollback()
            row = None
        if row and row[0]:
            return str(row[0])
        con.execute("CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL, "
                    "ts DOUBLE PRECISION NOT NULL)")
        con.execute(f"INSERT INTO secrets (name, value, ts) VALUES ({ph}, {ph}, {ph}) ON CONFLICT (name) DO NOTHING",
                    (name, secrets.token_hex(32), time.time()))
        con.commit()
        row = con.execute(select, (name,)).fetchone()
        if not row or not row[0]:
            raise LogError(f"log {self.url.split('@')[-1]}: secret {name!r} could not be stored")
        return str(row[0])

    def _migrate(self, con) -> None:
        """Add columns newer than an existing log's table (nullable, so old rows stay valid)."""
        if self.postgres:
            for col, kind in _ADDED:
                con.execute(f"ALTER TABLE requests ADD COLUMN IF NOT EXISTS {col} {kind}")
            return
        have = {row[1] for row in con.execute("PRAGMA table_info(requests)")}
        for col, kind in _ADDED:
            if col in have:
                continue
            try:
                con.execute(f"ALTER TABLE requests ADD COLUMN {col} {kind}")
            except sqlite3.OperationalError as exc:  # another process migrated it just now
                if "duplicate column" not in str(exc).lower():
                    raise


# columns added after the first release, migrated on open
_ADDED = (("cascade_chain", "TEXT"), ("candidates", "TEXT"), ("excluded", "TEXT"), ("needs", "TEXT"),
          ("upstream_id", "TEXT"), ("usage_estimated", "INTEGER"), ("surface", "TEXT"),
          ("key_hash", "TEXT"), ("budget_used", "DOUBLE PRECISION"), ("guard", "TEXT"))

# The dashboard's aggregations (tierwise.dashboard, docs/dashboard.md) walk these in order, so none
# sorts rows: covering indexes for the overview's GROUP BY, per-bucket counts and percentiles (ORDER BY
# ... OFFSET), a client key's own rows, and partial ones for the rare fallback and cascade rows (in
# SQLite covering their JSON too; Postgres caps an index entry at ~2.7 kB, so there they stay narrow).
_INDEXES = """
CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key_hash, ts);
CREATE INDEX IF NOT EXISTS requests_model_ts ON requests (model, ts, status, key_hash);
CREATE INDEX IF NOT EXISTS requests_groups ON requests (model, status, surface, ts, key_hash, cost_usd, tokens_in,
    tokens_out);
CREATE INDEX IF NOT EXISTS requests_latency ON requests (status, latency_ms, model, ts, key_hash);
CREATE INDEX IF NOT EXISTS requests_model_latency ON requests (status, model, latency_ms, ts, key_hash);
CREATE INDEX IF NOT EXISTS requests_route ON requests (route_ms, ts, key_hash);
CREATE INDEX IF NOT EXISTS requests_upstream ON requests (upstream_id, key_hash, ts);
CREATE INDEX IF NOT EXISTS requests_fallbacks ON requests (ts, key_hash{fallbacks}) WHERE fallbacks NOT IN ('[]', '');
CREATE INDEX IF NOT EXISTS requests_cascade ON requests (ts, key_hash{cascade}) WHERE cascade_chain IS NOT NULL;
"""
_SQLITE_COVERS = {"fallbacks": ", fallbacks",
                  "cascade": ", status, model, surface, tokens_in, tokens_out, cascade_chain"}
