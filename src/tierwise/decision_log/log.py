"""The decision log's writer: one row per gateway request, plus user feedback and stored Responses turns.

Why a background writer: the gateway must never wait on disk. ``record()`` only puts the row on a
queue; one thread drains the queue in batches every ``interval_s`` (one transaction per batch), so
32 concurrent clients cost one commit per batch, not per request, and the event loop is not woken
into a GIL hand-off on every call. Feedback goes through the same queue, so a rating sent
right after its answer always finds the request's row (the queue is FIFO). ``close()`` flushes.

The log is what ``tierwise stats`` proves savings from and what ``tierwise train`` can learn from
(``feedback_rows()``), so it stores token counts and the decision (candidate scores, fallbacks),
not just the outcome. Cascade requests also store their chain (``cascade_chain``: every model
called, its confidence, kept/escalated/error, and its own tokens and cost) so the savings baseline
can use the kept answer's tokens instead of the totals over every model called.

Stored responses (``POST /v1/responses`` with ``store`` on, the default) live in the same database,
table ``responses``: the response id, when, a hash of the client key that created it (so only that
key may read or continue it), the full chat-format conversation of that turn (earlier turns, this
turn's input, this turn's output) and the Response object. They go through the same FIFO writer
queue; ``get_response`` also sees rows still queued (kept in memory until their batch commits), so
a follow-up sent right after its answer always finds it. Rows older than ``responses_ttl_days``
(default 30) are never returned and are deleted by the writer: once when the gateway starts, then
at most hourly while responses are being written.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from ..config import DEFAULT_LOG, DEFAULT_RESPONSES_TTL_DAYS  # the YAML keys log, responses_ttl_days
from ..engine.record import COLUMNS as _COLUMNS
from ..engine.record import RequestRecord, from_row as _row_to_dict, to_row
from ..errors import LogError, RequestError
from .dialect import Dialect

DEFAULT_MAX_QUEUE = 100_000  # rows waiting for the writer before new ones are dropped (and counted)
_PRUNE_EVERY_S = 3600.0


class NotAnswered(RequestError):
    """Feedback for a request that got no answer (an error, a refusal): there is nothing to rate."""

    status, code = 409, "request_not_answered"

    def __init__(self, message: str):
        super().__init__(message, param="request_id")


def _warn(message: str) -> None:
    print(f"tierwise: {message}", file=sys.stderr, flush=True)


class DecisionLog:
    """Append-only request log with a background batch writer. Thread-safe; ``record`` never blocks.

    Nothing is lost silently: rows that cannot be written after retries are counted (``lost``) and
    reported on stderr; rows refused because the queue is full (the database stalled for long) are
    counted (``dropped``); a SQLite file deleted or replaced while running is noticed before the
    next batch, reported, and recreated. ``health()`` has the counters (``/health``, ``/metrics``).
    """

    def __init__(self, url: str | Path, *, store_prompts: bool = False, batch: int = 512,
                 interval_s: float = 0.05, responses_ttl_days: float = DEFAULT_RESPONSES_TTL_DAYS,
                 max_queue: int = DEFAULT_MAX_QUEUE):
        self.url = str(url)
        self.responses_ttl_days = float(responses_ttl_days)
        # stored responses queued but not committed yet (id -> row), so get_response sees them at once
        self._pending_responses: dict[str, dict[str, Any]] = {}
        self._pending_lock = threading.Lock()
        self._written_responses: list[str] = []
        self._last_prune = 0.0
        self.store_prompts = store_prompts
        self._batch = batch
        self._interval = interval_s
        self._dialect = Dialect(self.url)
        con = self._dialect.connect()  # fail fast (bad path / no server) before serving
        self._dialect.create(con)
        con.close()
        self._file_id = self._dialect.file_id()
        self.max_queue = int(max_queue)
        self.written = self.lost = self.dropped = self.reopened = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="tierwise-log-writer", daemon=True)
        self._thread.start()

    # -- writing ---------------------------------------------------------------------------

    def record(self, rec: RequestRecord) -> None:
        """Queue one request row; returns at once (a full queue drops the row and counts it)."""
        if not self.store_prompts:
            rec.prompt = None
        if self._queue.qsize() >= self.max_queue:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _warn(f"decision log {self.url}: queue full ({self.max_queue} rows waiting; the database is "
                      f"not keeping up): {self.dropped} row(s) dropped so far")
            return
        self._queue.put(("req", rec))

    def health(self) -> dict[str, Any]:
        """Writer state for /health and /metrics."""
        return {"status": "degraded" if (self._error or self.lost or self.dropped) else "ok",
                "error": self._error, "rows_written": self.written, "rows_lost": self.lost,
                "rows_dropped": self.dropped, "queued": self._queue.qsize(), "reopened": self.reopened}

    def add_feedback(self, request_id: str, score: float, *, key_hash: str | None = None,
                     admin: bool = True) -> concurrent.futures.Future:
        """Queue a rating of ``request_id`` (the gateway's request id, or an upstream's response id: the
        rating key's latest request with it). The future resolves to True; to False when it is not in
        the log or (unless ``admin``) was made with another client key than ``key_hash``'s; it raises
        :class:`NotAnswered` (409) when that request got no answer."""
        if not 0.0 <= float(score) <= 1.0:
            raise ValueError(f"feedback score must be in [0, 1], got {score!r}")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(("fb", (request_id, float(score), fut, None if admin else key_hash)))
        return fut

    # -- stored responses (the Responses API's previous_response_id) ------------------------

    def store_response(self, response_id: str, messages: list[dict[str, Any]], response: dict[str, Any], *,
                       key_hash: str | None = None, ts: float | None = None) -> None:
        """Queue one stored response; visible to ``get_response`` at once, written with the next batch."""
        row = {"id": response_id, "ts": float(ts if ts is not None else time.time()), "key_hash": key_hash,
               "messages": messages, "response": response}
        with self._pending_lock:
            self._pending_responses[response_id] = row
        self._queue.put(("resp", row))

    def get_response(self, response_id: str) -> dict[str, Any] | None:
        """A stored response (``{"id", "ts", "key_hash", "messages", "response"}``), or None when it
        does not exist, was deleted or is older than ``responses_ttl_days``. Blocking (a database read)."""
        with self._pending_lock:
            row = self._pending_responses.get(response_id)
        if row is None:
            got = self._query("SELECT id, ts, key_hash, messages, response FROM responses WHERE id = ?", (response_id,))
            if not got:
                return None
            rid, ts, key_hash, messages, response = got[0]
            row = {"id": rid, "ts": float(ts), "key_hash": key_hash, "messages": json.loads(messages),
                   "response": json.loads(response)}
        else:
            row = json.loads(json.dumps(row))  # a copy the caller may change
        if row["ts"] < time.time() - self.responses_ttl_days * 86400:
            return None
        return row

    def delete_response(self, response_id: str) -> concurrent.futures.Future:
        """Queue a deletion; the future resolves to True when the response existed."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._pending_lock:
            queued = self._pending_responses.pop(response_id, None) is not None
        self._queue.put(("resp_del", (response_id, queued, fut)))
        return fut

    def prune_responses(self) -> None:
        """Queue deleting the stored responses older than ``responses_ttl_days``."""
        self._queue.put(("prune", None))

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until everything queued so far is written."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(("flush", fut))
        fut.result(timeout)

    def close(self) -> None:
        """Write what is queued and stop the writer (called on server shutdown)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(("stop", None))
        self._thread.join(timeout=60)

    @property
    def writer_error(self) -> str | None:
        """The last write failure, if any (surfaced by /health)."""
        return self._error

    def _run(self) -> None:
        con = None
        stop = False
        while not stop:
            items = [self._queue.get()]
            # Let a batch gather: one wake-up and one commit per interval instead of per request
            # (a wake-up per request costs the event loop a GIL hand-off on every call).
            if items[0][0] == "req" and self._interval > 0 and self._queue.qsize() < self._batch:
                time.sleep(self._interval)
            while len(items) < self._batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(kind == "stop" for kind, _ in items)
            for attempt in range(3):  # a locked/unreachable database gets two retries, then the batch fails
                try:
                    con = self._check_file(con)
                    if con is None:
                        con = self._dialect.connect()
                    waiters = self._write(con, items)
                    self.written += sum(kind == "req" for kind, _ in items)
                    self._error = None
                    self._forget_written()
                    for fut, value in waiters:
                        if isinstance(value, BaseException):
                            fut.set_exception(value)
                        else:
                            fut.set_result(value)
                    break
                except Exception as exc:  # never kill the writer: report, reconnect, retry
                    self._error = f"{type(exc).__name__}: {exc}"
                    try:
                        if con is not None:
                            con.close()
                    except Exception:
                        pass
                    con = None
                    time.sleep(0.2 * (attempt + 1))
            else:
                err = LogError(f"log {self.url}: write failed ({self._error})")
                n = sum(kind == "req" for kind, _ in items)
                self.lost += n
                _warn(f"decision log {self.url}: LOST {n} row(s) after 3 tries ({self._error}); "
                      f"{self.lost} lost in all")
                self._written_responses.clear()  # still pending: get_response keeps serving them from memory
                for kind, payload in items:
                    fut = payload[2] if kind in ("fb", "resp_del") else payload if kind == "flush" else None
                    if fut is not None and not fut.done():
                        fut.set_exception(err)
        if con is not None:
            con.close()

    def _check_file(self, con):
        """Before a batch: is the SQLite file still the one we opened? If it was deleted or replaced,
        say so and start a fresh file (rows of earlier batches went to the old one)."""
        if self._dialect.postgres:
            return con
        now = self._dialect.file_id()
        if now == self._file_id and now is not None:
            return con
        _warn(f"decision log {self.url}: the file was {'deleted' if now is None else 'replaced'} while running; "
              "reopening it (rows written before this were not in the new file)")
        if con is not None:
            try:
                con.close()
            except Exception:
                pass
        con = self._dialect.connect()
        self._dialect.create(con)
        self._file_id = self._dialect.file_id()
        self.reopened += 1
        return con

    def _write(self, con, items: list[tuple[str, Any]]) -> list[tuple[concurrent.futures.Future, Any]]:
        """Write one batch in one transaction; returns the futures to resolve after the commit."""
        ph = self._dialect.ph
        waiters: list[tuple[concurrent.futures.Future, Any]] = []
        cur = con.cursor()
        rows: list[tuple] = []
        prune = False
        self._written_responses.clear()
        for kind, payload in items:
            if kind == "req":
                rows.append(to_row(payload))
            elif kind == "fb":
                if rows:  # keep FIFO order: the rated request may be in this batch
                    self._dialect.insert_requests(cur, rows)
                    rows = []
                rid, score, fut, owner = payload
                waiters.append((fut, self._rate(cur, rid, score, owner)))
            elif kind == "flush":
                waiters.append((payload, None))
            elif kind == "resp":
                cur.execute(
                    f"INSERT INTO responses (id, ts, key_hash, messages, response) VALUES ({ph}, {ph}, {ph}, {ph}, {ph}) "
                    "ON CONFLICT (id) DO NOTHING",
                    (payload["id"], payload["ts"], payload["key_hash"],
                     json.dumps(payload["messages"], ensure_ascii=False),
                     json.dumps(payload["response"], ensure_ascii=False)))
                self._written_responses.append(payload["id"])
                prune = prune or time.time() - self._last_prune > _PRUNE_EVERY_S
            elif kind == "resp_del":
                rid, queued, fut = payload
                cur.execute(f"DELETE FROM responses WHERE id = {ph}", (rid,))
                waiters.append((fut, queued or (cur.rowcount or 0) > 0))
            elif kind == "prune":
                prune = True
        if rows:
            self._dialect.insert_requests(cur, rows)
        if prune:
            cur.execute(f"DELETE FROM responses WHERE ts < {ph}", (time.time() - self.responses_ttl_days * 86400,))
            self._last_prune = time.time()
        con.commit()
        return waiters

    def _rate(self, cur, rid: str, score: float, owner: str | None) -> Any:
        """Store one rating (in the writer's transaction); True, False (no such request for this
        key), or a :class:`NotAnswered` for the future to raise.

        ``rid`` is the gateway's request id (``x-request-id``), else an upstream's response id:
        those repeat across backends and restarts (Ollama's ``chatcmpl-123``, a restarted stub's
        counter), so only the rating key's own requests are searched (an admin's: everyone's), and
        of several the most recent is rated. Another key's request is "not found": a key cannot
        rate, or probe for, others' requests."""
        ph = self._dialect.ph
        mine = "" if owner is None else f" AND key_hash = {ph}"
        cur.execute(f"SELECT id, status, model FROM requests WHERE id = {ph}{mine}",
                    (rid,) if owner is None else (rid, owner))
        hit = cur.fetchone()
        if hit is None:
            cur.execute(f"SELECT id, status, model FROM requests WHERE upstream_id = {ph}{mine} "
                        "ORDER BY ts DESC, id DESC LIMIT 1", (rid,) if owner is None else (rid, owner))
            hit = cur.fetchone()
        if hit is None:
            return False
        if int(hit[1]) != 200 or not hit[2]:
            return NotAnswered(f"request '{rid}' got no answer (status {int(hit[1])}): there is nothing to rate")
        cur.execute(f"INSERT INTO feedback (request_id, ts, score) VALUES ({ph}, {ph}, {ph})",
                    (hit[0], time.time(), score))
        return True

    def _forget_written(self) -> None:
        """Committed responses are read from the database from now on."""
        if not self._written_responses:
            return
        with self._pending_lock:
            for rid in self._written_responses:
                self._pending_responses.pop(rid, None)
        self._written_responses.clear()

    # -- reading (separate connection: readers never wait on the writer in WAL mode) --------

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        con = self._dialect.connect()
        try:
            cur = con.cursor()
            cur.execute(sql.replace("?", self._dialect.ph), tuple(params))
            return list(cur.fetchall())
        finally:
            con.close()

    def verify(self) -> dict[str, Any]:
        """Check the log as stored: the database's own integrity check (SQLite), the schema's
        columns, row counts, and feedback pointing at requests that are not there."""
        problems: list[str] = []
        try:
            if not self._dialect.postgres:
                result = [r[0] for r in self._query("PRAGMA integrity_check")]
                if result != ["ok"]:
                    problems += [f"integrity: {r}" for r in result[:10]]
                have = {r[1] for r in self._query("PRAGMA table_info(requests)")}
            else:
                have = {r[0] for r in self._query(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests'")}
            missing = [c for c in _COLUMNS if c not in have]
            if missing:
                problems.append(f"requests table lacks columns {missing}")
            rows = int(self._query("SELECT COUNT(*) FROM requests")[0][0])
            fb = int(self._query("SELECT COUNT(*) FROM feedback")[0][0])
            orphans = int(self._query("SELECT COUNT(*) FROM feedback f LEFT JOIN requests r ON r.id = f.request_id "
                                      "WHERE r.id IS NULL")[0][0])
            if orphans:
                problems.append(f"{orphans} feedback row(s) rate requests that are not in the log")
            last = self._query("SELECT MAX(ts) FROM requests")[0][0]
        except Exception as exc:  # a damaged file fails the queries themselves
            return {"ok": False, "url": self.url, "problems": [f"{type(exc).__name__}: {exc}"]}
        return {"ok": not problems, "url": self.url, "rows": rows, "feedback": fb,
                "last_request_ts": None if last is None else float(last), "problems": problems}

    def rows(self, last: int | None = None) -> list[dict[str, Any]]:
        """Logged requests, oldest first (the last ``last`` ones if given)."""
        cols = ", ".join(_COLUMNS)
        if last is not None:
            sql = f"SELECT {cols} FROM (SELECT {cols} FROM requests ORDER BY ts DESC LIMIT ?) t ORDER BY ts"
            return [_row_to_dict(r) for r in self._query(sql, (int(last),))]
        return [_row_to_dict(r) for r in self._query(f"SELECT {cols} FROM requests ORDER BY ts")]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM requests")[0][0])

    def has_request(self, request_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM requests WHERE id = ?", (request_id,)))

    def feedback_rows(self) -> list[dict[str, Any]]:
        """Rated requests for training: the latest score per request with what was routed.

        ``prompt`` is None unless the gateway ran with prompt storage on (``--log-prompts``).
        """
        sql = (
            "SELECT r.id, r.prompt_hash, r.prompt, r.model, r.chosen, r.scores, f.score, f.ts "
            "FROM feedback f JOIN requests r ON r.id = f.request_id ORDER BY f.ts"
        )
        latest: dict[str, dict[str, Any]] = {}
        for rid, ph, prompt, model, chosen, scores, score, ts in self._query(sql):
            latest[rid] = {
                "request_id": rid, "prompt_hash": ph, "prompt": prompt, "model": model,
                "chosen": chosen, "scores": json.loads(scores or "{}"), "score": float(score), "ts": float(ts),
            }
        return list(latest.values())


OFF = "off"


class NullLog:
    """``log: off``: nothing is recorded (no stats, feedback, stored Responses turns or database
    keys); for privacy, or to measure what the log costs. Feedback answers 503."""

    url = OFF
    store_prompts = False
    responses_ttl_days = 0.0
    writer_error = None

    def record(self, rec: RequestRecord) -> None:
        return None

    def add_feedback(self, request_id: str, score: float, **kw: Any) -> concurrent.futures.Future:
        raise LogError("feedback needs a decision log: this gateway runs with `log: off`")

    def store_response(self, *a: Any, **kw: Any) -> None:
        return None

    def get_response(self, response_id: str) -> None:
        return None

    def delete_response(self, response_id: str) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(False)
        return fut

    def prune_responses(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "error": None, "rows_written": 0, "rows_lost": 0, "rows_dropped": 0, "queued": 0,
                "reopened": 0, "off": True}

    def rows(self, last: int | None = None) -> list[dict[str, Any]]:
        return []

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None


def open_log(url: str | Path | None, **kwargs: Any) -> DecisionLog | NullLog:
    """The configured log (``off``: none), or the default path (``config.DEFAULT_LOG``)."""
    if str(url).strip().lower() == OFF:
        return NullLog()
    return DecisionLog(url or Path(DEFAULT_LOG).expanduser(), **kwargs)
