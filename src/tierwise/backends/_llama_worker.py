"""The local backend's worker: loaded model copies, one thread per copy, and the deadline rules.

A ``llama_cpp.Llama`` object is not thread-safe and decodes one sequence at a time, so the backend
holds N loaded copies, an ``asyncio.Semaphore`` of N per event loop (requests queue on it instead of
crashing), and a thread pool of N where the blocking work runs. Every job (a chat or text generation,
an embedding batch) goes through :meth:`Worker.run` or :meth:`Worker.submit`: a slot within the
deadline, a free copy, ``fn(llm)``, the copy given back whatever happens.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import BackendError


class Worker:
    def __init__(self, name: str, copies: list):
        self.name = name
        self.size = len(copies)
        self.free: queue.SimpleQueue = queue.SimpleQueue()  # copies not working right now
        for llm in copies:
            self.free.put(llm)
        self.executor = ThreadPoolExecutor(self.size, thread_name_prefix=f"llama-{name}")
        self._sems: dict[int, asyncio.Semaphore] = {}

    def _sem(self) -> asyncio.Semaphore:
        """One semaphore per event loop (tests and CLIs may run several loops one after another)."""
        loop = asyncio.get_running_loop()
        sem = self._sems.get(id(loop))
        if sem is None:
            self._sems = {id(loop): asyncio.Semaphore(self.size)}
            sem = self._sems[id(loop)]
        return sem

    def _on_copy(self, fn: Callable, deadline: float, cancel: threading.Event):
        """Worker thread: take a free model copy, run ``fn(llm)``, always give the copy back.

        The copy is returned here, not by an event-loop callback, so a loop that closes while a
        decode is still winding down (a script's ``asyncio.run`` ending) never leaks it.
        """
        try:
            llm = self.free.get(timeout=max(0.001, deadline - time.monotonic()))
        except queue.Empty:
            raise BackendError(self.name, "timed out waiting for a free model copy", timeout=True) from None
        try:
            if cancel.is_set():
                return None
            return fn(llm)
        finally:
            self.free.put(llm)

    async def submit(self, fn: Callable, deadline: float, cancel: threading.Event) -> asyncio.Future:
        """Wait for a slot (bounded by the deadline), then run ``fn(llm)`` in the worker thread."""
        sem = self._sem()
        try:
            await asyncio.wait_for(sem.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise BackendError(self.name, "timed out waiting for a free model slot", timeout=True) from None
        try:
            fut = asyncio.get_running_loop().run_in_executor(self.executor, self._on_copy, fn, deadline, cancel)
        except BaseException:
            sem.release()
            raise
        fut.add_done_callback(lambda f: (sem.release(), f.cancelled() or f.exception()))
        return fut

    def result(self, fut, limit: float) -> Any:
        """A finished job's result; its failure, or a job that never ran, as a BackendError."""
        try:
            result = fut.result()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(self.name, f"generation failed: {type(exc).__name__}: {exc}") from None
        if result is None:
            raise self.timeout(limit)
        return result

    async def run(self, fn: Callable[[Any, float, threading.Event], Any], limit: float) -> Any:
        """``fn(llm, deadline, cancel)`` on a free copy within ``limit`` seconds (queueing included);
        running out of time, or the caller being cancelled, sets ``cancel`` so the job stops."""
        deadline = time.monotonic() + limit
        cancel = threading.Event()
        fut = await self.submit(lambda llm: fn(llm, deadline, cancel), deadline, cancel)
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()) + 0.05)
        except asyncio.TimeoutError:
            cancel.set()
            raise self.timeout(limit) from None
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Exception:
            pass  # the job failed: result() reports it
        return self.result(fut, limit)

    async def events(self, job: Callable[..., Any], limit: float) -> AsyncIterator[tuple]:
        """``job(llm, deadline, cancel, put)`` on a free copy, yielding every ``put(*event)`` it makes
        (from the worker thread, handed over thread-safely), then ``("done", result)``. Each wait is
        bounded by the deadline; a consumer that leaves early sets ``cancel``."""
        deadline = time.monotonic() + limit
        loop = asyncio.get_running_loop()
        queued: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def put(*event) -> None:
            try:
                loop.call_soon_threadsafe(queued.put_nowait, event)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancel.set()

        fut = await self.submit(lambda llm: job(llm, deadline, cancel, put), deadline, cancel)
        fut.add_done_callback(lambda f: queued.put_nowait((None, f)))
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queued.get(), max(0.0, deadline - time.monotonic()) + 0.05)
                except asyncio.TimeoutError:
                    raise self.timeout(limit) from None
                if event[0] is None:
                    yield ("done", self.result(event[1], limit))
                    return
                yield event
        finally:
            cancel.set()  # the consumer left early (disconnect, timeout): the job stops at its next check

    def timeout(self, limit: float) -> BackendError:
        return BackendError(self.name, f"timed out after {limit:g}s", timeout=True)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                self.free.get_nowait().close()
            except queue.Empty:
                break
