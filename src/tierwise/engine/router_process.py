"""The router in a process of its own: routing decisions off the event loop's core.

One gateway process runs its whole request path on one core (the GIL); a learned router's decision
(tokenise, embed, three quality models, cost, rule) is the largest part of a routed request's CPU
there. With a core to spare, :class:`RouterProcess` makes the decisions in a child process instead:
the event loop only sends each batch of prompts (``engine.batching`` queues them per loop turn) down
a pipe and reads back compact results, so routing costs the loop a few microseconds per request and
the decisions of one batch overlap with the loop's HTTP work on the next.

The child gets a pickled copy of the router (same arrays, same decisions) and makes one warm-up
decision before it says it is ready. If it dies, every decision waiting on it and every later one is
made in the event loop again (the record says nothing different; a warning is printed once): a dead
child never fails a request.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import sys
from collections import deque
from typing import Any, Callable, Sequence

from ..decision import Decision
from .batching import decide_all

READY = b"ready"
_START_TIMEOUT_S = 60.0
# a batch unanswered this long means a stuck child (a decision takes well under a millisecond): it is
# killed and the loop decides from then on, so no request waits on it for ever
ANSWER_TIMEOUT_S = 10.0

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _compact(d: Decision) -> tuple:
    """One row of a batch's answer (``Decision.of``'s arguments); a failed row is its error text."""
    return d.index, d.knob, d.guard, list(d.scores.values()), list(d.costs.values())


def _serve(conn, blob: bytes) -> None:  # pragma: no cover - runs in the child (exercised by the tests)
    """The child: decide every batch that arrives, until the parent closes the pipe."""
    import signal

    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us (EOF)
    threadpool_limits(limits=1, user_api="blas")  # one core's worth of work per batch: no BLAS threads
    router = pickle.loads(blob)
    router.route("warm-up")
    conn.send_bytes(READY)
    while True:
        try:
            texts, knobs, allowed = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        rows = [d if isinstance(d, str) else _compact(d) for d in decide_all(router, texts, knobs, allowed)]
        conn.send_bytes(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))


class RouterProcess:
    """A child process deciding for ``router`` (which must have ``route_many`` and pickle)."""

    def __init__(self, router: Any, answer_timeout_s: float = ANSWER_TIMEOUT_S):
        self.answer_timeout_s = float(answer_timeout_s)
        self.models = list(router.models)
        self.rule = router.rule
        self.name = router.name
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads and an event loop
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_serve, args=(child, pickle.dumps(router, protocol=pickle.HIGHEST_PROTOCOL)),
                                 name="tierwise-router", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(_START_TIMEOUT_S) or self._recv() != READY:
            self.close()
            raise RuntimeError(f"the router process did not start within {_START_TIMEOUT_S:g} s")
        # batches sent and not answered yet, oldest first: (number, on_answer)
        self._waiting: deque[tuple[int, Callable[[list | None], None]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.alive = True
        self.sent = 0  # batches sent

    @property
    def busy(self) -> bool:
        """A batch is out: decisions sent and not answered yet."""
        return bool(self._waiting)

    def _recv(self) -> bytes | None:
        try:
            return self._conn.recv_bytes()
        except (EOFError, OSError):
            return None

    def submit(self, texts: Sequence[str], knobs: Sequence, allowed: Sequence,
               on_answer: Callable[[list], None]) -> bool:
        """Send one batch; ``on_answer(rows)`` is called from the event loop with the decisions
        (``decisions``), or with None if the child dies or does not answer within ``answer_timeout_s``
        (then the caller decides). False (nothing sent) once the child is gone."""
        if not self.alive:
            return False
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the first batch (or a new loop, as in tests): read answers in this one
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._conn.fileno())
            self._loop = loop
            loop.add_reader(self._conn.fileno(), self._on_readable)
        try:
            self._conn.send_bytes(pickle.dumps((texts, knobs, allowed), protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            self._died()
            return False
        self.sent += 1
        self._waiting.append((self.sent, on_answer))
        loop.call_later(self.answer_timeout_s, self._check_answered, self.sent)
        return True

    def _check_answered(self, number: int) -> None:
        if self.alive and self._waiting and self._waiting[0][0] <= number:
            print(f"tierwise: the router process did not answer within {self.answer_timeout_s:g} s; stopping it",
                  file=sys.stderr, flush=True)
            self._proc.kill()
            self._died()

    def decisions(self, rows: list) -> list[Decision | str]:
        """The child's compact rows as decisions (or error texts)."""
        return [row if isinstance(row, str) else Decision.of(self.models, *row, self.rule, self.name) for row in rows]

    def _on_readable(self) -> None:
        while self._conn.poll():  # (also true at end of file: the child is gone)
            data = self._recv()
            if data is None or not self._waiting:
                self._died()
                return
            _, on_answer = self._waiting.popleft()
            on_answer(pickle.loads(data))

    def _died(self) -> None:
        """The child is gone: every batch it owed is handed back (``on_answer(None)``)."""
        if not self.alive:
            return
        self.alive = False
        print(f"tierwise: the router process exited (code {self._proc.exitcode}); deciding in the event "
              "loop from now on", file=sys.stderr, flush=True)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._conn.fileno())
        waiting, self._waiting = self._waiting, deque()
        for _, on_answer in waiting:
            on_answer(None)

    def close(self) -> None:
        self.alive = False
        if getattr(self, "_loop", None) is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._conn.fileno())
            except (ValueError, OSError):
                pass
        self._conn.close()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
